"""luse.augment: text views for view-based objectives (installed from the repo's ``augment/`` folder).

``eda``          EDA views (synonym replacement / insertion, swap, deletion) over segmented words
``segment``      word segmentation: jieba's dictionary through jieba-rs, or whitespace
``paraphrases``  pre-generated paraphrase views (``luse generate --in --out``)
``synonyms/``    the memory-mapped synonym cache: ``store`` (the file), ``build`` (faiss neighbours,
                 the default cache), ``sources`` (word vectors, thesauri, stopwords)
"""
