//! One module per subcommand.

pub mod bench;
pub mod convert;
pub mod engines;
pub mod inspect;
pub mod models;
pub mod pull;
pub mod run;
pub mod runner;
pub mod serve;
pub mod worker;
