//! End-to-end tests against the local stand-ins started by `scripts/test`
//! (`scripts/emulators start`): real sockets, real servers, reference clients.

mod canaries;
mod config_cli;
mod config_pillar;
mod docker_faults;
mod docker_mirror;
mod git_credentials;
mod lambda_binaries;
mod logging;
mod logging_producers;
mod scp_converge;
mod scp_dulwich;
mod scp_faults;
mod scp_push;
mod scp_worst_day;
mod secrets;
mod self_contained;
mod source_control;
mod support;
