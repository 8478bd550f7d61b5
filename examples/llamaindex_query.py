"""A LlamaIndex RAG query, streamed, with every token and dollar attributed: retrieve vs synthesize.

It runs offline against tokenspy's fake provider (an OpenAI-compatible server on 127.0.0.1), with a
real model name so the calls are priced. Against the real API, drop the FakeProvider lines and the
`api_base`/`api_key` arguments and set OPENAI_API_KEY.
"""

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.response.schema import StreamingResponse
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider

fake = FakeProvider(reply="Paris is the capital of France, on the Seine.").start()

# Every LlamaIndex LLM and embedding call in the process, including objects built before this line.
tokenspy.set_handler(TokenSpyHandler())

llm = OpenAI(
    model="gpt-4o-mini", api_base=fake.openai_base_url, api_key="sk-fake",
    # llama-index-llms-openai never asks for usage on streams: without this, a streamed answer's
    # tokens are estimated with tiktoken (and the record says `usage_source="estimated"`).
    additional_kwargs={"stream_options": {"include_usage": True}},
)
# A real embedding model against the fake provider, so that indexing and retrieval are priced too.
embed_model = OpenAIEmbedding(model="text-embedding-3-small", api_base=fake.openai_base_url,
                              api_key="sk-fake")

documents = [
    Document(text="Paris is the capital and largest city of France."),
    Document(text="The Seine flows through Paris before reaching the English Channel."),
    Document(text="Berlin is the capital of Germany."),
]


@tokenspy.profile
def build_index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(documents, embed_model=embed_model)


query_engine = build_index().as_query_engine(llm=llm, streaming=True, similarity_top_k=2)


@tokenspy.profile
def ask(question: str) -> None:
    response = query_engine.query(question)
    assert isinstance(response, StreamingResponse)  # built with streaming=True
    for text in response.response_gen:  # the LLM call runs while this loop reads it
        print(text, end="", flush=True)
    print()


ask("What is the capital of France?")
# ask → RetrieverQueryEngine.query → VectorIndexRetriever.retrieve (the query's embedding)
#                                 → CompactAndRefine.synthesize (the streamed answer)
tokenspy.report()
fake.stop()
