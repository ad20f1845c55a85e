"""Sparse update: which parameters learn (UpdateScheme), what that costs (memory), what it gains
(contribution analysis), and the search for the best scheme under a memory budget."""
