"""The synonym cache that EDA reads: ``store`` reads and writes the file, ``build`` computes it from
``sources`` (word vectors, a thesaurus, stopwords). ``store`` never imports ``build``."""
