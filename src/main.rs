//! The `satellite` command: serve the map, query it, make certificates, run the demo.
#![forbid(unsafe_code)]

fn main() {}
