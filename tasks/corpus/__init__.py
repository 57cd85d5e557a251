"""Problems: dataset loaders and formats, reference-solution rewriting, the validation split, the synthetic word problems."""
