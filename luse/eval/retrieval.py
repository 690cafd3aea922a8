"""Dense retrieval with sentence vectors: encode texts, index them with faiss, search, save, load.

The end use of a sentence encoder, and the building block of hard-negative mining: every function
here works on plain ``float32`` arrays whose rows are unit-length, so an inner product is a
cosine similarity and every score printed or returned is a cosine in ``[-1, 1]``.

Functions
---------
``encode_texts(encoder, texts)``      texts in memory -> ``(n, d)`` float32, unit rows.
``encode_file(encoder, src, out)``    a sentences file (one per line, optionally ``.gz``) -> ``.npy``,
                                      streamed: the file is read lazily, vectors are written chunk by
                                      chunk, and the ``.npy`` appears only when complete (atomic).
``build_index(vectors, kind)``        a :class:`VectorIndex` over the rows (``flat``, ``ivf``, ``hnsw``).
``search(index, queries, k)``         ``(scores, ids)``: the ``k`` most similar rows of each query.
``save_index`` / ``load_index``       a faiss index file, written atomically.
``read_lines_at(path, ids)``          the texts of some rows, in one lazy pass over the sentences file.
``model_identity`` / ``check_identity``  which model encoded a corpus, kept beside its ``.npy`` or index
                                      (``FILE.model.json``) and checked against the query model.

Index kinds
-----------
``flat``  exact: brute-force inner product (faiss ``IndexFlatIP``). The right choice up to a few
          million vectors on a CPU, and on a GPU far beyond.
``ivf``   approximate: k-means splits the vectors into ``nlist`` lists (default ``4 sqrt(n)``, at
          least 39 training vectors per list, as faiss asks); a query scans its ``nprobe`` nearest
          lists (default ``nlist / 4``, at least 16). Work per query about ``nprobe / nlist`` of exact.
``hnsw``  approximate: a navigable small-world graph (``M=32``, ``efConstruction=40``, ``efSearch``
          default 64, raised to ``k`` when smaller). No training; holds a graph besides the vectors;
          CPU only in faiss.

Recall@10 of ``ivf`` and ``hnsw`` against ``flat`` on People's Daily sentences encoded with
m3e-small: ``benchmarks/retrieval.py``, results in ``benchmarks/results/retrieval.md``.

GPU: with faiss-gpu and a visible GPU, ``flat`` and ``ivf`` indexes are built and searched there
(``use_gpu=None``, the default, means "when available"); saving copies the index back to the CPU
first, so a saved index loads anywhere.

Example (hard-negative mining)::

    from luse.eval.retrieval import build_index, encode_texts, search

    vectors = encode_texts(encoder, corpus)              # (n, d) float32, unit rows
    index = build_index(vectors, "ivf")
    scores, ids = search(index, encode_texts(encoder, anchors), k=20)
    # ids[i] are the rows of `corpus` most similar to anchors[i], best first (-1 = fewer found)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from luse.errors import InputError
from luse.io import atomic_open, atomic_write_bytes, atomic_write_text, import_faiss

logger = logging.getLogger("luse")

INDEX_KINDS = ("flat", "ivf", "hnsw")
#: faiss warns (and clusters badly) with fewer training vectors than this per IVF list.
MIN_POINTS_PER_LIST = 39
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64
#: Sentences read, encoded and written at a time by :func:`encode_file`, in batches.
CHUNK_BATCHES = 8


# --- encoding ------------------------------------------------------------------------------------

def encode_texts(encoder, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Sentence vectors of ``texts`` for retrieval: ``(len(texts), d)`` float32, L2-normalised rows.

    The same vectors as ``encoder.encode(texts, normalize=True)`` (eval mode, the encoder's own
    pooling), as a C-contiguous array faiss can take without a copy.

    Args:
        encoder: A :class:`~luse.model.encoder.SentenceEncoder` (anything with a compatible ``encode``).
        texts: The sentences, in the order their rows should have.
        batch_size: Sentences per forward pass.
        show_progress: Show a progress bar on stderr.
    """
    vectors = encoder.encode(list(texts), batch_size=batch_size, normalize=True, show_progress=show_progress)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def iter_sentences(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, sentence)`` for every line of a sentences file, read lazily.

    A sentences file has one sentence per line, UTF-8, optionally gzipped (``.gz``). Row ``i`` of
    an encoded ``.npy`` is line ``i + 1``, so no line may be skipped: an undecodable or blank line
    is an error rather than a silent shift of every later row.

    Raises:
        InputError: A line that is not UTF-8 or is blank (naming the file and line), or a corrupt
            ``.gz``.
        FileNotFoundError: If the file does not exist.
    """
    from luse.data.corpus import iter_text_lines

    for line_number, text in iter_text_lines(path):
        if not text.strip():
            raise InputError(path, "one sentence per line (row i of the vectors is line i + 1)",
                             got="a blank line", line=line_number)
        yield line_number, text


def count_sentences(path: str | os.PathLike) -> int:
    """The number of sentences in a sentences file, checking every line (see :func:`iter_sentences`)."""
    return sum(1 for _ in iter_sentences(path))


def encode_file(encoder, src: str | os.PathLike, out: str | os.PathLike, *, batch_size: int = 64,
                chunk_size: int | None = None, show_progress: bool = False,
                total: int | None = None) -> tuple[int, int]:
    """Encode a sentences file into a ``.npy`` of float32 unit rows, streaming both ways.

    The file is read twice, lazily: once to check and count its lines (a bad line fails in
    seconds, before any model work), once to encode ``chunk_size`` sentences at a time, whose
    vectors are appended to the ``.npy`` right away. Memory stays at one chunk whatever the file
    size. The output is written to a temporary sibling and renamed into place when complete, so
    an interrupted run leaves ``out`` as it was. The result loads with ``np.load(out)`` (or
    ``np.load(out, mmap_mode="r")``) and equals :func:`encode_texts` over the lines.

    Args:
        encoder: A :class:`~luse.model.encoder.SentenceEncoder`.
        src: The sentences file (one per line, UTF-8, optionally ``.gz``).
        out: The ``.npy`` to write (its folder is created if needed).
        batch_size: Sentences per forward pass.
        chunk_size: Sentences per chunk (default ``8 * batch_size``); within a chunk sentences are
            sorted by length, so larger chunks waste less padding.
        show_progress: Show a progress bar (sentences) on stderr.
        total: ``count_sentences(src)`` when the caller already has it (the checking pass is then
            not repeated).

    Returns:
        ``(rows, dim)`` of the written array.

    Raises:
        InputError: An empty file, or a bad line (see :func:`iter_sentences`).
    """
    total = count_sentences(src) if total is None else total
    if total == 0:
        raise InputError(src, "at least one sentence", got="an empty file")
    chunk_size = chunk_size or CHUNK_BATCHES * batch_size
    from tqdm.auto import tqdm

    sentences = (text for _, text in iter_sentences(src))
    written, dim = 0, None
    with atomic_open(out, "wb") as handle, tqdm(total=total, desc="encode", unit="sent", unit_scale=True,
                                                disable=not show_progress) as bar:
        while chunk := list(islice(sentences, chunk_size)):
            vectors = encode_texts(encoder, chunk, batch_size=batch_size)
            if dim is None:
                # The header needs the final shape, known now: rows from the count, dim from the model.
                dim = vectors.shape[1]
                np.lib.format.write_array_header_1_0(
                    handle, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                             "shape": (total, dim)})
            handle.write(vectors.astype("<f4", copy=False).tobytes())
            written += len(chunk)
            bar.update(len(chunk))
        if written != total:  # the file changed between the two passes
            raise InputError(src, f"{total} lines, as counted a moment ago", got=f"{written} lines")
    return total, dim


def load_vectors(path: str | os.PathLike, *, mmap: bool = True) -> np.ndarray:
    """A ``(n, d)`` float32 array from a ``.npy`` (memory-mapped by default: nothing is read up front).

    Raises:
        FileNotFoundError: If the file does not exist.
        InputError: If it is not a ``.npy`` of a 2-d float array with at least one row.
    """
    try:
        vectors = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise InputError(path, "a .npy file of sentence vectors (from `luse encode`)",
                         got=" ".join(str(err).split())) from None
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.dtype.kind != "f":
        raise InputError(path, "a non-empty 2-d float array (rows x dimensions)",
                         got=f"shape {vectors.shape}, dtype {vectors.dtype}")
    return vectors


# --- indexes -------------------------------------------------------------------------------------

@dataclass
class VectorIndex:
    """A faiss index over unit-length rows, with what :func:`search` needs to query it.

    Attributes:
        index: The faiss index (inner product metric); on the GPU when ``gpu`` is true.
        kind: One of :data:`INDEX_KINDS`.
        nprobe: Lists scanned per query (``ivf``).
        ef_search: Candidate list size of the graph walk (``hnsw``).
        gpu: Whether the index lives on the GPU(s).
    """

    index: Any
    kind: str
    nprobe: int | None = None
    ef_search: int | None = None
    gpu: bool = False

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)


def gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    faiss = import_faiss()

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def default_nlist(size: int) -> int:
    """IVF lists for ``size`` vectors: ``4 sqrt(size)``, but at least 39 training vectors per list."""
    return max(1, min(round(4 * math.sqrt(size)), size // MIN_POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """IVF lists scanned per query: a quarter of the lists, at least 16 (all of them when fewer).

    Sentence vectors are not well clustered: on 9k People's Daily sentences (m3e-small, 230 lists)
    an eighth of the lists gave recall@10 0.90 and a quarter 0.96 (``benchmarks/retrieval.py``).
    """
    return min(nlist, max(16, nlist // 4))


def build_index(vectors: np.ndarray, kind: str = "flat", *, nlist: int | None = None, nprobe: int | None = None,
                ef_search: int = HNSW_EF_SEARCH, use_gpu: bool | None = None, seed: int = 0) -> VectorIndex:
    """A faiss index over the rows of ``vectors`` (row ``i`` gets id ``i``).

    Rows are L2-normalised (in a copy, when they are not unit-length already), so the scores that
    :func:`search` returns are cosine similarities.

    Args:
        vectors: ``(n, d)`` float array, ``n >= 1`` (a memory-mapped ``.npy`` is fine).
        kind: ``flat`` (exact), ``ivf`` or ``hnsw`` (approximate); see the module docstring.
        nlist: IVF lists (default :func:`default_nlist`); capped at ``n``.
        nprobe: IVF lists scanned per query (default :func:`default_nprobe`); can be changed per search.
        ef_search: HNSW candidate list size (can be changed per search).
        use_gpu: ``None``: on the GPU when faiss sees one and the kind supports it (``flat``,
            ``ivf``); ``True``: require it; ``False``: CPU.
        seed: Seed of IVF's k-means.

    Raises:
        ValueError: An unknown kind, bad vectors, or ``use_gpu=True`` without a usable GPU.
    """
    faiss = import_faiss()

    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    vectors = _unit_rows(vectors, "vectors")
    size, dim = vectors.shape
    on_gpu = _use_gpu(use_gpu, kind)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        result = VectorIndex(index, kind)
    elif kind == "ivf":
        nlist = min(nlist or default_nlist(size), size)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.spherical = True  # centroids on the unit sphere, like the vectors
        index.nprobe = nprobe or default_nprobe(nlist)
        result = VectorIndex(index, kind, nprobe=index.nprobe)
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = ef_search
        result = VectorIndex(index, kind, ef_search=ef_search)
    if on_gpu:
        result.index, result.gpu = faiss.index_cpu_to_all_gpus(index), True
    if not result.index.is_trained:
        result.index.train(vectors)
    result.index.add(vectors)
    return result


def search(index: VectorIndex, queries: np.ndarray, k: int = 10, *, nprobe: int | None = None,
           ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows most similar to each query, best first.

    Args:
        index: From :func:`build_index` or :func:`load_index`.
        queries: ``(m, d)`` or ``(d,)`` float array; rows are L2-normalised like the index's.
        k: Results per query; more than the index holds gives all of them.
        nprobe: IVF lists to scan for this search (default: the index's own).
        ef_search: HNSW candidate list size for this search (default: the index's, raised to ``k``).

    Returns:
        ``(scores, ids)``: ``(m, k)`` float32 cosine similarities and ``(m, k)`` int64 row ids.
        An approximate index can find fewer than ``k`` rows for a query; the missing places have
        id ``-1`` and score ``-inf``.

    Raises:
        ValueError: If the queries' dimension differs from the index's, or ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    queries = np.asarray(queries)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or queries.shape[1] != index.dim:
        raise ValueError(f"queries have dimension {queries.shape[-1]} but the index holds vectors of "
                         f"dimension {index.dim}; encode them with the model that encoded the index")
    queries = _unit_rows(queries, "queries")
    k = min(k, index.size)
    if index.kind == "ivf":
        _set_parameter(index, "nprobe", nprobe or index.nprobe)
    elif index.kind == "hnsw":
        _set_parameter(index, "efSearch", max(ef_search or index.ef_search or HNSW_EF_SEARCH, k))
    scores, ids = index.index.search(queries, k)
    scores[ids < 0] = -np.inf
    return scores, ids


def save_index(index: VectorIndex, path: str | os.PathLike) -> Path:
    """Write ``index`` to ``path`` as a faiss index file, atomically (a GPU index is copied to the CPU)."""
    faiss = import_faiss()

    cpu = faiss.index_gpu_to_cpu(index.index) if index.gpu else index.index
    return atomic_write_bytes(path, faiss.serialize_index(cpu).tobytes())


def load_index(path: str | os.PathLike, *, use_gpu: bool | None = None) -> VectorIndex:
    """Read an index written by :func:`save_index` (its kind, nprobe and efSearch come with it).

    Raises:
        FileNotFoundError: If the file does not exist.
        InputError: If it is not a faiss index file of a kind luse builds.
    """
    faiss = import_faiss()

    data = np.fromfile(path, dtype=np.uint8)
    try:
        index = faiss.deserialize_index(data)
    except RuntimeError as err:
        # faiss's message ends with the reason ('Index type 0x... not recognized'); keep that part.
        reason = str(err).strip().rsplit(": ", 1)[-1] or "unreadable"
        raise InputError(path, "a faiss index file (from `luse search --save-index`)", got=reason) from None
    # deserialize_index already returns the concrete class (calling downcast_index on it would
    # leave a wrapper that does not own the index, freed with the first one).
    if isinstance(index, faiss.IndexFlat):
        result = VectorIndex(index, "flat")
    elif isinstance(index, faiss.IndexIVFFlat):
        result = VectorIndex(index, "ivf", nprobe=index.nprobe)
    elif isinstance(index, faiss.IndexHNSWFlat):
        result = VectorIndex(index, "hnsw", ef_search=index.hnsw.efSearch)
    else:
        raise InputError(path, "a flat, ivf or hnsw faiss index", got=type(index).__name__)
    if _use_gpu(use_gpu, result.kind):
        result.index, result.gpu = faiss.index_cpu_to_all_gpus(index), True
    return result


def read_lines_at(path: str | os.PathLike, ids: Iterable[int]) -> tuple[dict[int, str], int]:
    """The sentences of rows ``ids`` (0-based) of a sentences file, in one lazy pass.

    Returns:
        ``({row: sentence}, number of rows in the file)``; the count lets callers check that the
        file matches the vectors it is shown with.
    """
    wanted = {int(i) for i in ids if i >= 0}
    found, rows = {}, 0
    for rows, (_, text) in enumerate(iter_sentences(path), 1):
        if rows - 1 in wanted:
            found[rows - 1] = text
    return found, rows


# --- helpers -------------------------------------------------------------------------------------

def _use_gpu(use_gpu: bool | None, kind: str) -> bool:
    if use_gpu is False:
        return False
    gpus = gpu_count()
    if use_gpu is None:
        return gpus > 0 and kind != "hnsw"
    if gpus == 0:
        raise ValueError("use_gpu=True, but faiss sees no GPU (install faiss-gpu: `pip install -e '.[gpu]'`)")
    if kind == "hnsw":
        raise ValueError("faiss has no GPU version of the hnsw index; use flat or ivf on the GPU")
    return True


def _set_parameter(index: VectorIndex, name: str, value: int) -> None:
    faiss = import_faiss()

    space = faiss.GpuParameterSpace() if index.gpu else faiss.ParameterSpace()
    space.set_index_parameter(index.index, name, int(value))


def _unit_rows(vectors, name: str) -> np.ndarray:
    """A C-contiguous float32 copy-if-needed of ``vectors`` with unit-length rows (zero rows stay zero)."""
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-d array, got shape {array.shape}")
    if array.dtype.kind != "f":
        raise ValueError(f"{name} must be floats, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    norms = np.linalg.norm(array, axis=1)
    if np.allclose(norms[norms > 0], 1.0, atol=1e-4):
        return array
    return array / np.maximum(norms, 1e-12)[:, None]


# --- which model encoded a corpus ------------------------------------------------------------------

#: Texts a model encodes when it writes a corpus's vectors: their vectors tell two models apart even
#: at the same dimension (and the same model under another pooling or max_length).
PROBE_TEXTS = ("今天天气很好，我们去公园散步吧。", "北京是中国的首都。", "The cat sat on the mat.", "2024年3月")
#: Below this cosine on some probe text, the query model is not the one that encoded the corpus
#: (the same model on another device or precision stays far above it).
SAME_MODEL_COSINE = 0.99
IDENTITY_SUFFIX = ".model.json"


def model_identity(encoder, name: str, rows: int) -> dict[str, Any]:
    """What identifies the model that encoded ``rows`` vectors: the name it was given, its pooling
    and its vectors of :data:`PROBE_TEXTS`."""
    probe = encode_texts(encoder, PROBE_TEXTS)
    return {"model": str(name), "pooling": getattr(encoder, "pooling", None), "rows": int(rows),
            "dim": int(probe.shape[1]), "probe": [[round(float(x), 6) for x in row] for row in probe]}


def identity_path(path: str | os.PathLike) -> Path:
    """Where the identity of the model behind ``path`` (a ``.npy`` or a saved index) is kept."""
    return Path(os.fspath(path) + IDENTITY_SUFFIX)


def write_identity(path: str | os.PathLike, identity: dict[str, Any]) -> Path:
    """Keep ``identity`` beside ``path`` (atomically)."""
    return atomic_write_text(identity_path(path), json.dumps(identity, ensure_ascii=False) + "\n")


def read_identity(path: str | os.PathLike, rows: int) -> dict[str, Any] | None:
    """The identity kept beside ``path``; None (with a warning) when there is none, or when it
    describes another number of rows (a file written over by something else)."""
    file = identity_path(path)
    try:
        identity = json.loads(file.read_text(encoding="utf-8"))
        probe = np.asarray(identity["probe"], dtype=np.float32)
        if identity["rows"] != rows or probe.ndim != 2:
            raise ValueError
    except FileNotFoundError:
        logger.warning("%s: no record of the model that encoded it (written by an older luse or by hand): "
                       "cannot check that the query model is the same", path)
        return None
    except (ValueError, KeyError, TypeError):
        logger.warning("%s does not describe %s (%d rows): ignored", file, path, rows)
        return None
    return identity


def check_identity(path: str | os.PathLike, identity: dict[str, Any], encoder, name: str) -> None:
    """Refuse a query model ``encoder`` (called ``name``) other than the one that encoded ``path``.

    Raises:
        InputError: the probe texts' vectors differ (another model, pooling or max_length).
    """
    stored = np.asarray(identity["probe"], dtype=np.float32)
    current = encode_texts(encoder, PROBE_TEXTS)
    if stored.shape != current.shape or float((stored * current).sum(axis=1).min()) < SAME_MODEL_COSINE:
        raise InputError(path, f"vectors encoded by the query model {name} (pooling {getattr(encoder, 'pooling', '?')})",
                         got=f"vectors of {identity['model']} (pooling {identity.get('pooling')})",
                         hint=f"search with --model {identity['model']}, or encode the corpus again with {name}")
