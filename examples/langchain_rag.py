"""Offline RAG retrieval with LangChain: LocalEmbeddings + FAISS + a retriever chain.

A library help desk's notes go into FAISS; each question retrieves the note that answers it.
No language model runs offline, so the "generation" step here only builds the prompt an LLM
would receive: everything below is retrieval.

Runs offline on the embedded all-MiniLM-L6-v2 (needs faiss-cpu and langchain-community):
    python examples/langchain_rag.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from langchain_community.vectorstores import FAISS
from langchain_community.vectorstores.utils import DistanceStrategy
from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from langchain_localembed import LocalEmbeddings

NOTES = {
    "hours": "The library opens at 9 am and closes at 8 pm on weekdays; weekends 10 am to 4 pm.",
    "limits": "Members may borrow up to twelve items at once for three weeks each.",
    "fees": "Overdue items are fined 20 cents a day, up to 5 euros per item.",
    "renewals": "Loans can be extended twice online unless another member has reserved them.",
    "ebooks": "E-books and audiobooks can be downloaded to phones and e-readers with the app.",
    "printing": "Printing costs 10 cents per page; pay at the machine with your member card.",
    "rooms": "Study rooms for up to six people can be booked for two hours at the front desk.",
    "card": "A lost member card is replaced for 2 euros; bring an identity document.",
    "parking": "Visitors may park for free for three hours in the garage behind the building.",
    "wifi": "The wireless network is open to everyone; no password is needed.",
}
QUESTIONS = [
    "Is there a penalty for overdue books?",
    "Can I read books on my tablet?",
    "Where can I leave my car?",
    "Where can my study group meet?",
]
PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question using only this context:\n{context}"),
        ("human", "{question}"),
    ]
)


def format_context(documents: list[Document]) -> str:
    return "\n".join(f"- {doc.page_content}" for doc in documents)


def main() -> None:
    embeddings = LocalEmbeddings()
    documents = [Document(page_content=text, metadata={"key": key}) for key, text in NOTES.items()]
    # Vectors are unit length, so the inner product is the cosine similarity (higher is
    # better). FAISS's default, IndexFlatL2, would rank the same but report 2 - 2 * cosine.
    store = FAISS.from_documents(
        documents, embeddings, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT
    )
    model = embeddings.encoder.describe()["model"]
    print(f"{len(documents)} notes in FAISS; cosine similarity of {model} vectors\n")

    for question in QUESTIONS:
        ((top, score),) = store.similarity_search_with_score(question, k=1)
        print(f"Q: {question}\n   -> {score:.3f}  [{top.metadata['key']}] {top.page_content}")

    # The RAG chain: retriever -> context -> prompt. An LLM would take the prompt from here.
    retriever = store.as_retriever(search_kwargs={"k": 2})
    chain = {
        "context": retriever | RunnableLambda(format_context),
        "question": RunnablePassthrough(),
    } | PROMPT
    prompt = chain.invoke(QUESTIONS[0])
    print("\nThe prompt an LLM would receive (retrieval only: no model generates text here):")
    for message in prompt.to_messages():
        print(f"[{message.type}] {message.content}")


if __name__ == "__main__":
    main()
