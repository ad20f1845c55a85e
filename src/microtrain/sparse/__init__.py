"""Sparse update: which parameters learn (UpdateScheme, the shipped schemes). Costing and searching
schemes lives in scheme_search/, above the runtime and the code generator."""
