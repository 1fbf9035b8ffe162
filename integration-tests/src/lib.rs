//! Test infrastructure shared by the integration tests and the demo: the stand-in for
//! CodeCommit's git endpoint. The tests themselves live in `tests/it`.

pub mod codecommit_git;
