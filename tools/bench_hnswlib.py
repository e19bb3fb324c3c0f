"""hnswlib on the vectors of `cargo bench --bench ann`, for the side-by-side in the README.

    CLIPDEX_ANN_DUMP=/tmp/ann cargo bench --bench ann -- 100000
    python tools/bench_hnswlib.py /tmp/ann 100000

Same parameters as clipdex's graph (M 16, ef_construction 200, inner product on unit
vectors), one thread for queries as in the Rust benchmark, recall@10 against numpy's exact
answer. Needs `pip install hnswlib==0.8.0 numpy`.
"""

import sys
import time

import hnswlib
import numpy as np

DIM = 512


def main() -> None:
    folder, n = sys.argv[1], int(sys.argv[2])
    vectors = np.fromfile(f"{folder}/vectors-{n}.f32", dtype="<f4").reshape(-1, DIM)
    queries = np.fromfile(f"{folder}/queries-{n}.f32", dtype="<f4").reshape(-1, DIM)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]

    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=n, M=16, ef_construction=200)
    index.set_num_threads(2)
    started = time.perf_counter()
    index.add_items(vectors, np.arange(n))
    build = time.perf_counter() - started
    print(f"hnswlib {hnswlib.__version__ if hasattr(hnswlib, '__version__') else '0.8.0'}: {n} vectors, "
          f"built at {n / build:.0f} vectors/s ({build:.0f} s, 2 threads)")

    index.set_num_threads(1)
    for ef in (10, 16, 32, 64, 128, 256):
        index.set_ef(ef)
        found = 0
        started = time.perf_counter()
        for _ in range(4):
            for q, t in zip(queries, truth):
                labels, _ = index.knn_query(q, k=10)
                found += len(set(labels[0]) & set(t))
        per_query = (time.perf_counter() - started) / (4 * len(queries))
        print(f"hnswlib ef {ef:>3}: {1 / per_query:.0f} queries/s, recall@10 {found / (40 * len(queries)):.3f}")


if __name__ == "__main__":
    main()
