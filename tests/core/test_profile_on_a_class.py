"""`@tokenspy.profile` on a class is refused where it is written: its wrapper would be a function,
and the class name would stop being a class (isinstance, subclassing) far from the decorator."""

from __future__ import annotations

from typing import Any

import pytest

import tokenspy


@pytest.mark.parametrize("decorator", [tokenspy.profile, tokenspy.profile(name="agent", budget_usd=1)],
                         ids=["bare", "with-options"])
def test_profile_on_a_class_is_a_type_error_at_decoration(decorator: Any) -> None:
    with pytest.raises(TypeError) as raised:
        @decorator
        class Agent:
            def run(self) -> None:
                tokenspy.record("gpt-4o", input_tokens=10, output_tokens=1)

    assert str(raised.value) == ("@tokenspy.profile decorates a function, got the class Agent: "
                                 "decorate its methods instead")


def test_its_methods_are_profiled_and_the_class_stays_a_class() -> None:
    class Agent:
        @tokenspy.profile
        def run(self) -> None:
            tokenspy.record("gpt-4o", input_tokens=1000, output_tokens=100)

    agent = Agent()
    agent.run()
    assert isinstance(agent, Agent)
    assert tokenspy.stats()["by_function"]["run"]["cost_usd"] == 0.0035
