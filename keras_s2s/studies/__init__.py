"""The paper's findings as commands (`s2s study NAME`): each study trains or decodes, and
writes its table (Markdown and JSON) and its picture (PNG) into an output directory.

- `beam`: quality by beam size, a single model and an ensemble (the paper's Table 1).
- `length`: quality by source length, for several runs (the paper's Figure 3, left).
- `vector`: a 2-D PCA of the encoder's final states for groups of inputs (Figure 2).
- `reversal`: the same model with and without the reversed source, equal budgets.
- `depth`: 1 to N layers at equal budget (perplexity per depth).
"""
