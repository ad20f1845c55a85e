"""Choosing a sparse update scheme: what each candidate update costs (memory: upstream's analytic
model and the engine's exact plan), what it gains (contribution: fine-tunes measuring each update's
accuracy gain), and the search for the best scheme under a memory budget (search). It sits above
runtime (it fine-tunes) and codegen (it compiles for exact figures); the schemes it produces are
sparse.scheme.UpdateScheme values."""
