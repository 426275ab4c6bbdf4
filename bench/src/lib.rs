//! murmur's benchmark tooling as a library, so the bins and the smoke test share it:
//! the dataset generator, bearer-token minting for the load scripts, and the sustained
//! event stream of the live projector bench.

pub mod generate;
pub mod stream;
pub mod tokens;
