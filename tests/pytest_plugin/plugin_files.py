"""Test files the plugin's tests run, and what the plugin prints for them.

Their tests record calls at known prices (USD per million tokens): m-large $2 in / $8 out, m-small
$0.50 in / $1 out, so every amount is worked out by hand in the comments (µ$ = 1e-6 USD).
"""

# Inner runs skip plugins these tests do not exercise and that cost seconds per run in this process:
# hypothesis imports its whole library at each run's summary (pytester removes it from sys.modules
# again after every run), langsmith's is similar, pytest-asyncio warns about its unset loop scope,
# and the unraisable-exception hook makes five full gc passes over this process's large heap.
LEAN = ("-p no:hypothesispytest -p no:langsmith_plugin -p no:asyncio -p no:unraisableexception "
        "-p no:cacheprovider")

# Prices and a profiled helper shared by the generated test files.
PRELUDE = '''
import pytest
import tokenspy


@pytest.fixture(autouse=True)
def _prices():
    tokenspy.set_price("m-large", input=2, output=8)
    tokenspy.set_price("m-small", input=0.5, output=1)


@tokenspy.profile
def summarize(n):
    tokenspy.record("m-large", input_tokens=n, output_tokens=200)
'''

COSTS = PRELUDE + '''

def test_long():
    summarize(5_000)                                                    # 10,000 + 1,600 µ$
    tokenspy.record("m-small", input_tokens=1_000, output_tokens=100)  #    500 +   100 µ$


def test_short():
    summarize(500)                                                      #  1,000 + 1,600 µ$


def test_no_llm():
    assert True


def test_streams():
    abandoned = tokenspy.start_call("m-small", stream=True)
    abandoned.set_usage(input_tokens=300, output_tokens=20)            #    150 +    20 µ$, partial
    abandoned.abort()
    unreported = tokenspy.start_call("m-small", stream=True)
    unreported.set_usage(input_tokens=400)                             #    200 µ$, output estimated (0)
    unreported.finish()
'''

# The table `--tokenspy` prints for COSTS (the same with or without pytest-xdist), as fnmatch patterns.
COSTS_TABLE = [
    "=* tokenspy: LLM calls by test =*",
    "test                         calls  tokens       cost  partial  estimated",
    "test_costs.py::test_long         2   6,300  $0.012200        0          0",
    "test_costs.py::test_short        1     700  $0.002600        0          0",
    "test_costs.py::test_streams      2     720  $0.000370        1          1",
    "-------------------------------------------------------------------------",
    "total (3 tests)                  5   7,720  $0.015170        1          1",
]
