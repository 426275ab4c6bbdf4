//! murmur HTTP API (filled in by the command-side work).
