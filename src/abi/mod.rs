//! Guest ABIs: the host side of each interface's imports.

pub mod terrafirma;
