"""The data every stage passes on: `graph` (the network), `training` (the steps of one SGD step),
`program` (kernel calls, buffers, constants). Import the submodules directly; this package
re-exports nothing so that a low module importing `ir.graph` never pulls in the op registry."""
