//! Outpost's end-to-end tests (in `tests/all/`): a control plane and edge
//! nodes together, each started through its crate's own `start`. This
//! crate exists so that neither the control plane nor the edge node needs
//! the other to test the path between them; it has no code of its own.
