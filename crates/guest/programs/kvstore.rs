#![no_std]
#![no_main]
#[path = "rt/mod.rs"]
mod rt;
use rt::params::{Params, Program};
const PROGRAM: Program = Program::Kvstore;
fn setup(_boot: &rt::Boot, _p: &Params) {}
fn run(_cpu: usize) -> ! { loop { rt::poll(0); } }
