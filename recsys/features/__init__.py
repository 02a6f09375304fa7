"""Rows -> tensors: the one feature path shared by training, evaluation and serving.

- splits:       train/valid/test assignment of the interactions
- sequences:    leak-free behaviour sequences (and a user's latest clicks, for serving)
- feature_map:  vocabularies and normalisation fitted on train
- item_table:   every item's model inputs (ids, attributes, frozen content vectors)
- batch:        the typed model batch
- examples:     interactions -> examples (batch arrays + evaluation metadata); one request's user/context
- prepare:      a dataset directory -> prepared features (fit, build)
- prepared:     the prepared-features directory on disk (the only code that knows its files)
- predict:      one loop from batches to click probabilities
"""
