//! murmur's benchmark tooling as a library, so the bins and the smoke test share it:
//! the dataset generator and bearer-token minting for the load scripts.

pub mod generate;
pub mod tokens;
