"""``luse encode`` and ``luse search``: a sentences file to vectors, and nearest-neighbour queries over them.

::

    luse encode MODEL --in corpus.txt --out corpus.npy                 # row i = line i + 1
    luse search --index-from corpus.npy --texts corpus.txt --model MODEL --query "今天天气很好" -k 10
    luse search --index-from corpus.npy --texts corpus.txt --model MODEL --queries questions.txt \\
        --index ivf --save-index corpus.ivf --json
    luse search --index-from corpus.ivf --texts corpus.txt --model MODEL --query "..."   # reuse the index

``--index-from`` takes the ``.npy`` of ``luse encode`` (an index of kind ``--index`` is built over
it) or an index file saved with ``--save-index`` (loaded as it is). The model must be the one that
encoded the corpus; a different vector size is refused with one line. Scores are cosine similarities.

``--json`` prints one object::

    {"index": "flat", "k": 10, "results": [{"query": "...", "hits": [
        {"rank": 1, "row": 16, "line": 17, "score": 0.93, "text": "..."}, ...]}, ...]}

Registration is light (argparse only); numpy, torch and faiss are imported by the handlers.
"""

from __future__ import annotations

import argparse
import json
import logging

from luse.cli.args import positive_int

logger = logging.getLogger("luse.eval.retrieval")

INDEX_KINDS = ("flat", "ivf", "hnsw")  # luse.eval.retrieval.INDEX_KINDS, repeated so registering stays light


def register(subparsers) -> None:
    """Add ``luse encode`` and ``luse search`` to the ``luse`` command."""
    _register_encode(subparsers)
    _register_search(subparsers)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", metavar="N", type=positive_int, default=64, help="default: 64")
    parser.add_argument("--max-length", metavar="N", type=positive_int,
                        help="truncate sentences to N tokens (default: the model's setting, else 64)")
    parser.add_argument("--pooling", metavar="P",
                        help="pooler, cls, mean or first_last_avg (default: the model's own)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def _register_encode(subparsers) -> None:
    parser = subparsers.add_parser(
        "encode", help="encode a sentences file (one per line) into a .npy of unit-length float32 vectors",
        description="Encode every line of a sentences file (UTF-8, optionally .gz; row i of the output is "
                    "line i + 1) into a .npy of L2-normalised float32 vectors. The file is streamed and the "
                    "output appears only when complete.")
    parser.add_argument("model", metavar="MODEL",
                        help="an exported luse model, any Hugging Face encoder directory, or m3e-small")
    parser.add_argument("--in", dest="input", required=True, metavar="FILE", help="sentences, one per line")
    parser.add_argument("--out", required=True, metavar="FILE.npy", help="where to write the vectors")
    _add_model_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_encode)


def run_encode(args: argparse.Namespace) -> int:
    from luse.eval.retrieval import count_sentences, encode_file, model_identity, write_identity
    from luse.model.export import load_model

    total = count_sentences(args.input)  # a bad file fails before the model loads
    encoder = load_model(args.model, pooling=args.pooling, max_length=args.max_length, device=args.device)
    rows, dim = encode_file(encoder, args.input, args.out, batch_size=args.batch_size,
                            show_progress=not args.quiet, total=total)
    write_identity(args.out, model_identity(encoder, args.model, rows))  # luse search checks it
    logger.info("wrote %s: %d vectors of dimension %d", args.out, rows, dim)
    return 0


def _register_search(subparsers) -> None:
    parser = subparsers.add_parser(
        "search", help="nearest sentences of an encoded corpus for some queries (faiss, exact or approximate)",
        description="Build (or load) a faiss index over an encoded corpus, encode the queries with the same "
                    "model and print the k most similar sentences with their cosine similarity. Uses the GPU "
                    "when faiss-gpu sees one (flat and ivf indexes).")
    parser.add_argument("--index-from", required=True, metavar="FILE",
                        help="vectors from `luse encode` (.npy), or an index saved with --save-index")
    parser.add_argument("--texts", required=True, metavar="FILE", help="the sentences file that was encoded")
    parser.add_argument("--model", required=True, metavar="MODEL", help="the model that encoded it")
    queries = parser.add_mutually_exclusive_group(required=True)
    queries.add_argument("--query", nargs="+", metavar="TEXT", help="one or more query sentences")
    queries.add_argument("--queries", metavar="FILE", help="a file of query sentences, one per line")
    parser.add_argument("-k", type=positive_int, default=10, help="results per query (default: 10)")
    parser.add_argument("--index", choices=INDEX_KINDS, default="flat",
                        help="flat: exact; ivf, hnsw: approximate (default: flat; ignored for a saved index)")
    parser.add_argument("--nlist", type=positive_int, metavar="N", help="ivf lists (default: 4 sqrt(rows))")
    parser.add_argument("--nprobe", type=positive_int, metavar="N",
                        help="ivf lists scanned per query (default: nlist / 4, at least 16)")
    parser.add_argument("--ef-search", type=positive_int, metavar="N", help="hnsw search breadth (default: 64)")
    parser.add_argument("--save-index", metavar="FILE", help="also write the built index here (atomically)")
    _add_model_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(handler=run_search)


def run_search(args: argparse.Namespace) -> int:
    from luse.errors import InputError
    from luse.eval.retrieval import (
        build_index,
        check_identity,
        encode_texts,
        iter_sentences,
        load_index,
        load_vectors,
        read_identity,
        read_lines_at,
        save_index,
        search,
        write_identity,
    )
    from luse.model.export import load_model

    texts = list(args.query) if args.query else [text for _, text in iter_sentences(args.queries)]
    if not texts:
        raise InputError(args.queries, "at least one query sentence", got="an empty file")
    if args.index_from.endswith(".npy"):
        vectors = load_vectors(args.index_from)
        index = build_index(vectors, args.index, nlist=args.nlist, nprobe=args.nprobe,
                            **({"ef_search": args.ef_search} if args.ef_search else {}))
        del vectors
    else:
        index = load_index(args.index_from)
    logger.info("%s index over %d vectors of dimension %d%s", index.kind, index.size, index.dim,
                " on the GPU" if index.gpu else "")
    encoder = load_model(args.model, pooling=args.pooling, max_length=args.max_length, device=args.device)
    if encoder.hidden_size != index.dim:
        raise InputError(args.index_from, f"vectors of dimension {encoder.hidden_size} (what {args.model} "
                         "produces); encode the corpus with the same model", got=f"dimension {index.dim}")
    identity = read_identity(args.index_from, index.size)
    if identity is not None:
        check_identity(args.index_from, identity, encoder, args.model)
    if args.save_index:
        save_index(index, args.save_index)
        if identity is not None:
            write_identity(args.save_index, identity)
        logger.info("saved the index to %s", args.save_index)
    scores, ids = search(index, encode_texts(encoder, texts, batch_size=args.batch_size), args.k,
                         nprobe=args.nprobe, ef_search=args.ef_search)
    lines, rows = read_lines_at(args.texts, ids.ravel())
    if rows != index.size:
        raise InputError(args.texts, f"{index.size} lines, one per vector of {args.index_from}", got=f"{rows} lines")
    results = [{"query": query, "hits": [
        {"rank": rank, "row": int(row), "line": int(row) + 1, "score": round(float(score), 6), "text": lines[row]}
        for rank, (score, row) in enumerate(zip(scores[q], ids[q]), 1) if row >= 0]}
        for q, query in enumerate(texts)]
    if args.json:
        print(json.dumps({"index": index.kind, "k": args.k, "results": results}, ensure_ascii=False))
    else:
        print(format_results(results))
    return 0


def format_results(results: list[dict]) -> str:
    """Plain-text top-k lists: the query, then ``rank  score  line  text`` per hit."""
    blocks = []
    for result in results:
        lines = [f"query: {result['query']}"]
        lines += [f"{hit['rank']:>4}  {hit['score']:.4f}  line {hit['line']:<8} {hit['text']}" for hit in result["hits"]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)

