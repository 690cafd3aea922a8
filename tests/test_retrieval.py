"""Retrieval: encoding to unit vectors (in memory and streamed to .npy), faiss indexes, save/load,
and the ``luse encode`` / ``luse search`` commands with their one-line errors."""

import gzip
import json
import os

import numpy as np
import pytest

from luse.cli.main import main
from luse.errors import InputError
from luse.eval.retrieval import (
    build_index,
    default_nlist,
    encode_file,
    encode_texts,
    load_index,
    load_vectors,
    read_lines_at,
    save_index,
    search,
)
from luse.model.encoder import SentenceEncoder

SENTENCES = [
    "今天天气很好。", "明天可能下雨。", "我喜欢看电影。", "他在公园里跑步。", "一只猫在玩毛线球。",
    "飞机要起飞了。", "孩子们在公园里玩耍。", "一个人正在切黄瓜。", "会议推迟到下周一。", "这本书很有意思。",
    "股市今天大幅上涨。", "新的地铁线路开通了。", "她每天早上喝咖啡。", "春节是中国最重要的节日。",
]


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return SentenceEncoder.from_pretrained(str(tiny_bert)).eval()


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def clustered(n=3000, dim=32, clusters=60, noise=1.0, seed=0):
    """Unit vectors around random centres: the structure IVF relies on, like real sentence vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(clusters, size=n)] + noise * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at(found, exact):
    return np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)])


def naive_top_k(vectors, queries, k):
    """Reference: full cosine matrix, argsort."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ v.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, 1), ids


# --- encoding ------------------------------------------------------------------------------------

def test_encode_texts_are_the_encoders_vectors_normalised(encoder):
    vectors = encode_texts(encoder, SENTENCES, batch_size=4)
    reference = encoder.encode(SENTENCES, batch_size=64)
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    assert vectors.dtype == np.float32 and vectors.flags.c_contiguous
    assert vectors.shape == (len(SENTENCES), encoder.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


@pytest.mark.parametrize("gz", [False, True])
def test_encode_file_streams_chunks_into_the_same_npy(encoder, tmp_path, gz):
    src = tmp_path / ("corpus.txt.gz" if gz else "corpus.txt")
    data = ("\n".join(SENTENCES) + "\n").encode("utf-8")
    src.write_bytes(gzip.compress(data) if gz else data)
    out = tmp_path / "out" / "vectors.npy"
    # chunk_size 3 over 14 lines: five chunks, the last one short.
    assert encode_file(encoder, src, out, batch_size=2, chunk_size=3) == (len(SENTENCES), encoder.hidden_size)
    written = np.load(out)
    assert written.dtype == np.float32
    np.testing.assert_allclose(written, encode_texts(encoder, SENTENCES), atol=1e-5)
    assert sorted(os.listdir(out.parent)) == ["vectors.npy"]  # no temporary file left behind


def test_encode_file_bad_line_fails_before_writing_and_keeps_the_old_output(encoder, tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_bytes("一\n二\n".encode() + b"\xff\xfe\n" + "三\n".encode())
    out = tmp_path / "vectors.npy"
    out.write_bytes(b"previous")
    with pytest.raises(InputError, match=r"corpus.txt:3: expected UTF-8 text"):
        encode_file(encoder, src, out)
    src.write_text("一\n\n二\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"corpus.txt:2: expected one sentence per line"):
        encode_file(encoder, src, out)
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["corpus.txt", "vectors.npy"]


# --- indexes -------------------------------------------------------------------------------------

def test_flat_search_matches_the_naive_top_k_and_finds_each_vector_first():
    vectors = clustered(500)
    index = build_index(vectors, "flat", use_gpu=False)
    scores, ids = search(index, vectors, k=5)
    assert (ids[:, 0] == np.arange(len(vectors))).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    ref_scores, ref_ids = naive_top_k(vectors, vectors[:50], 5)
    np.testing.assert_allclose(scores[:50], ref_scores, atol=1e-5)
    assert recall_at(ids[:50], ref_ids) == 1.0  # ties aside, the same rows


def test_exact_search_over_encoded_sentences_finds_each_sentence_itself(encoder):
    vectors = encode_texts(encoder, SENTENCES)
    scores, ids = search(build_index(vectors, "flat"), encode_texts(encoder, SENTENCES), k=3)
    assert ids[:, 0].tolist() == list(range(len(SENTENCES)))
    assert scores.shape == (len(SENTENCES), 3) and (np.diff(scores, axis=1) <= 1e-6).all()


def test_unnormalised_input_is_scored_by_cosine():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((40, 8)).astype(np.float32) * rng.uniform(0.1, 10, (40, 1)).astype(np.float32)
    queries = rng.standard_normal((5, 8))
    scores, ids = search(build_index(vectors, "flat"), queries, k=4)
    ref_scores, ref_ids = naive_top_k(vectors, queries, 4)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert (ids == ref_ids).all()


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_reach_high_recall_at_10(kind):
    vectors = clustered(3000)
    queries = vectors[::15]
    exact = search(build_index(vectors, "flat"), queries, k=10)[1]
    index = build_index(vectors, kind)
    found = search(index, queries, k=10)[1]
    assert recall_at(found, exact) >= 0.9
    if kind == "ivf":
        assert index.index.nlist == default_nlist(3000) == 76
        # Scanning one list of 76 must lose neighbours, or the test could not tell IVF from exact.
        assert recall_at(search(index, queries, k=10, nprobe=1)[1], exact) < 0.9


def test_k_larger_than_the_index_and_a_single_query():
    vectors = clustered(7, dim=4)
    scores, ids = search(build_index(vectors, "flat"), vectors[3], k=50)
    assert ids.shape == (1, 7) and ids[0, 0] == 3 and sorted(ids[0]) == list(range(7))


def test_bad_arguments_are_value_errors():
    vectors = clustered(100, dim=8)
    with pytest.raises(ValueError, match="unknown index kind 'lsh'"):
        build_index(vectors, "lsh")
    with pytest.raises(ValueError, match="dimension 4 but the index holds vectors of dimension 8"):
        search(build_index(vectors), np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="non-empty 2-d"):
        build_index(np.zeros((0, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.full((3, 8), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="no GPU version of the hnsw index|faiss sees no GPU"):
        build_index(vectors, "hnsw", use_gpu=True)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_and_load_give_the_same_results(tmp_path, kind):
    vectors = clustered(1000)
    index = build_index(vectors, kind, nprobe=5, ef_search=40)
    path = save_index(index, tmp_path / "idx" / "corpus.faiss")
    loaded = load_index(path, use_gpu=False)
    assert (loaded.kind, loaded.size, loaded.dim) == (kind, 1000, 32)
    assert (loaded.nprobe, loaded.ef_search) == (index.nprobe, index.ef_search)
    before, after = search(index, vectors[:30], k=10), search(loaded, vectors[:30], k=10)
    assert (before[1] == after[1]).all()
    assert sorted(os.listdir(path.parent)) == ["corpus.faiss"]
    (tmp_path / "junk.faiss").write_bytes(b"not an index")
    with pytest.raises(InputError, match="junk.faiss: expected a faiss index file"):
        load_index(tmp_path / "junk.faiss")


def test_read_lines_at_picks_rows_in_one_pass(corpus):
    lines, rows = read_lines_at(corpus, [5, 0, 13, -1, 5])
    assert rows == len(SENTENCES)
    assert lines == {0: SENTENCES[0], 5: SENTENCES[5], 13: SENTENCES[13]}


def test_load_vectors_refuses_what_is_not_a_vector_file(tmp_path):
    np.save(tmp_path / "one.npy", np.ones(3, dtype=np.float32))
    with pytest.raises(InputError, match="one.npy: expected a non-empty 2-d float array"):
        load_vectors(tmp_path / "one.npy")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(InputError, match="text.npy: expected a .npy file of sentence vectors"):
        load_vectors(tmp_path / "text.npy")


# --- the commands --------------------------------------------------------------------------------

def test_encode_then_search_round_trip_with_json(tiny_bert, corpus, tmp_path, capsys):
    out = tmp_path / "corpus.npy"
    assert main(["encode", str(tiny_bert), "--in", str(corpus), "--out", str(out), "--batch-size", "4",
                 "--quiet"]) == 0
    assert np.load(out).shape == (len(SENTENCES), 32)
    capsys.readouterr()
    for kind in ("flat", "ivf", "hnsw"):
        saved = tmp_path / f"corpus.{kind}"
        assert main(["search", "--index-from", str(out), "--texts", str(corpus), "--model", str(tiny_bert),
                     "--query", SENTENCES[2], SENTENCES[9], "-k", "3", "--index", kind, "--json",
                     "--save-index", str(saved)]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["index"] == kind and result["k"] == 3
        assert [r["query"] for r in result["results"]] == [SENTENCES[2], SENTENCES[9]]
        for row, query in zip((2, 9), result["results"]):
            top = query["hits"][0]
            assert (top["rank"], top["row"], top["line"], top["text"]) == (1, row, row + 1, SENTENCES[row])
            assert top["score"] == pytest.approx(1.0, abs=1e-4)
            assert len(query["hits"]) == 3
            assert all(hit["text"] == SENTENCES[hit["row"]] for hit in query["hits"])
        # The saved index answers the same.
        queries = tmp_path / "queries.txt"
        queries.write_text(f"{SENTENCES[2]}\n{SENTENCES[9]}\n", encoding="utf-8")
        assert main(["search", "--index-from", str(saved), "--texts", str(corpus), "--model", str(tiny_bert),
                     "--queries", str(queries), "-k", "3", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["results"] == result["results"]


def test_search_prints_a_plain_table(tiny_bert, corpus, tmp_path, capsys):
    out = tmp_path / "corpus.npy"
    assert main(["encode", str(tiny_bert), "--in", str(corpus), "--out", str(out), "--quiet"]) == 0
    assert main(["search", "--index-from", str(out), "--texts", str(corpus), "--model", str(tiny_bert),
                 "--query", SENTENCES[4], "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"query: {SENTENCES[4]}"
    assert lines[1].split() == ["1", "1.0000", "line", "5", SENTENCES[4]]
    assert len(lines) == 3


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return captured.err.strip().splitlines()[-1]


def test_commands_report_bad_input_in_one_line(tiny_bert, corpus, tmp_path, capsys):
    out = tmp_path / "corpus.npy"
    missing = tmp_path / "missing.txt"
    assert main(["encode", str(tiny_bert), "--in", str(missing), "--out", str(out)]) == 2
    assert _error_line(capsys) == f"luse: error: [Errno 2] No such file or directory: '{missing}'"
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["encode", str(tiny_bert), "--in", str(empty), "--out", str(out)]) == 2
    assert _error_line(capsys) == f"luse: error: {empty}: expected at least one sentence, got 'an empty file'"
    assert not out.exists()

    search_args = ["search", "--texts", str(corpus), "--model", str(tiny_bert), "--query", "天气"]
    assert main([*search_args, "--index-from", str(tmp_path / "none.npy")]) == 2
    assert "No such file or directory" in _error_line(capsys)
    wrong_dim = tmp_path / "wrong.npy"
    np.save(wrong_dim, clustered(len(SENTENCES), dim=16))
    assert main([*search_args, "--index-from", str(wrong_dim)]) == 2
    assert _error_line(capsys) == (f"luse: error: {wrong_dim}: expected vectors of dimension 32 (what {tiny_bert} "
                                   "produces); encode the corpus with the same model, got 'dimension 16'")
    fewer_rows = tmp_path / "fewer.npy"
    np.save(fewer_rows, clustered(5, dim=32))
    assert main([*search_args, "--index-from", str(fewer_rows)]) == 2
    assert _error_line(capsys) == (f"luse: error: {corpus}: expected 5 lines, one per vector of {fewer_rows}, "
                                   f"got '{len(SENTENCES)} lines'")
    assert main(["search", "--index-from", str(fewer_rows), "--texts", str(corpus), "--model", str(tiny_bert),
                 "--queries", str(empty)]) == 2
    assert _error_line(capsys) == f"luse: error: {empty}: expected at least one query sentence, got 'an empty file'"


def test_search_refuses_a_query_model_other_than_the_one_that_encoded_the_corpus(tiny_bert, corpus, tmp_path,
                                                                                   capsys):
    from tiny_models import make_tiny_model

    other = make_tiny_model(tmp_path / "other", seed=1)  # the same architecture and dimension, other weights
    out, saved = tmp_path / "corpus.npy", tmp_path / "corpus.flat"
    assert main(["encode", str(tiny_bert), "--in", str(corpus), "--out", str(out), "--quiet"]) == 0
    assert main(["search", "--index-from", str(out), "--texts", str(corpus), "--model", str(tiny_bert),
                 "--query", SENTENCES[0], "--save-index", str(saved)]) == 0
    capsys.readouterr()
    for index_from in (out, saved):  # the saved index keeps the identity of the model behind its vectors
        for model, pooling in ((other, []), (tiny_bert, ["--pooling", "mean"])):
            assert main(["search", "--index-from", str(index_from), "--texts", str(corpus), "--model", str(model),
                         *pooling, "--query", SENTENCES[0]]) == 2
            line = _error_line(capsys)
            assert line.startswith(f"luse: error: {index_from}: expected vectors encoded by the query model {model}")
            assert f"got 'vectors of {tiny_bert} (pooling pooler)'" in line, line


@pytest.mark.parametrize("code", [
    "from luse.eval.retrieval import build_index; build_index(np.eye(4, dtype='float32'), 'flat')",  # search, mining
    "from luse.augment.synonyms.sources import normalize_rows; normalize_rows(np.eye(4, dtype='float32'))",
    "from luse.augment.synonyms.build import find_neighbours; find_neighbours(np.eye(8, dtype='float32'), 2)",
])
def test_faiss_loader_lines_are_silenced_wherever_luse_imports_it(code):
    """The commands log at INFO (luse.cli.main); faiss's loader would add its CPU-build lines there."""
    import subprocess
    import sys

    script = f"import logging; logging.basicConfig(level=logging.INFO)\nimport numpy as np\n{code}\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "faiss.loader" not in result.stderr and "ModuleNotFoundError" not in result.stderr, result.stderr


def test_faiss_is_imported_in_one_place():
    import ast

    from conftest import REPO

    importers = {str(path.relative_to(REPO)) for base in ("luse", "augment") for path in (REPO / base).rglob("*.py")
                 for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Import) and any(alias.name == "faiss" for alias in node.names)}
    assert importers == {"luse/io.py"}  # import_faiss, which silences the loader
