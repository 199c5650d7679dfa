"""The pair table, defined once: its columns, the source language and a translated row's extra columns.

=========  ===================================================================================
pair_id    ``sha1(source + "\\x1f" + original question id)[:16]``: the same in every run and in
           every language, so a question's translations share its id
source     the source's name (``gather.sources[*].name``)
lang       ISO 639 code; English rows are the source pairs
question   the question
passage    the answer sentence
context    the paragraph holding the answer when ``gather.with_context`` is set, else null
system     ``source`` for the English original, ``reference`` for a human translation the source
           itself carries, ``ctranslate2:<model>`` for machine translation
=========  ===================================================================================

A translated row (``data/translated/<lang>.parquet``) also carries its English original in
:data:`SOURCE_COLUMNS`.
"""
PAIR_COLUMNS = ["pair_id", "source", "lang", "question", "passage", "context", "system"]
SOURCE_COLUMNS = ["src_question", "src_passage"]
SOURCE_LANG = "en"
#: the ``system`` of a human translation a source carries (a model's rows say ``ctranslate2:<model key>``)
REFERENCE_SYSTEM = "reference"
