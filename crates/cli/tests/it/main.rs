//! Integration tests: the real `sesame` binary against real SQLite files,
//! object directories and HTTP.

mod acme;
mod api;
mod archive;
mod content;
mod dashboard;
mod domains;
mod drafts;
mod edge;
mod errors;
mod export;
mod fuzz;
mod http;
mod incremental;
mod resources;
mod scale;
mod serve;
mod strangers;
mod support;
