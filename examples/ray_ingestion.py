"""Corpus-scale ingestion with Ray Data: embed a dataset on an actor pool, then search it.

Runs offline on a local Ray instance (2 CPUs) and the embedded all-MiniLM-L6-v2:
    python examples/ray_ingestion.py
On a cluster, connect with ray.init(address="auto") instead and read/write Parquet.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no telemetry

import numpy as np
import ray

from localembed import get_encoder
from localembed.ray import embed_dataset

DOCUMENTS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Photosynthesis turns sunlight, water and carbon dioxide into glucose and oxygen.",
    "Python was created by Guido van Rossum and first released in 1991.",
    "The Great Barrier Reef is the largest coral reef system on Earth.",
    "A sourdough starter is a culture of wild yeast and lactic acid bacteria.",
    "The Pacific is the largest and deepest of the world's oceans.",
    "Mount Everest rises 8,849 metres above sea level on the Nepal-China border.",
    "The human heart pumps blood through the body in a double circulation.",
    "Rust guarantees memory safety without a garbage collector through ownership.",
    "The Rosetta Stone helped scholars decipher Egyptian hieroglyphs.",
    "Honey bees communicate the location of flowers with a waggle dance.",
    "The speed of light in a vacuum is about 299,792 kilometres per second.",
    "Espresso is brewed by forcing hot water through finely ground coffee.",
    "The Amazon rainforest produces a large share of the planet's oxygen.",
    "Chess originated in India around the sixth century as chaturanga.",
    "A haiku is a Japanese poem of three lines with five, seven and five syllables.",
    "The Apollo 11 mission landed the first humans on the Moon in 1969.",
    "Penicillin was discovered by Alexander Fleming in 1928.",
    "Basalt is a volcanic rock formed from rapidly cooling lava.",
    "The violin has four strings tuned in perfect fifths.",
]
QUERY = "Who invented the Python programming language?"


def main() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.from_items([{"id": i, "text": text} for i, text in enumerate(DOCUMENTS)])
        # One encoder per actor; the vectors come back as a new column, other columns kept.
        embedded = embed_dataset(ds, concurrency=2, rows_per_batch=8)
        rows = sorted(embedded.take_all(), key=lambda row: row["id"])
        matrix = np.stack([row["embedding"] for row in rows])
        print(f"embedded {len(rows)} documents on 2 actors: {matrix.shape} {matrix.dtype}")

        # The query side in the driver: the same model, its query instruction.
        query = get_encoder().encode_queries([QUERY])[0]
        scores = matrix @ query  # normalized vectors: dot product = cosine similarity
        print(f"query: {QUERY}")
        for rank, index in enumerate(np.argsort(-scores)[:3], start=1):
            print(f"  {rank}. {scores[index]:.3f}  [{rows[index]['id']}] {rows[index]['text']}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
