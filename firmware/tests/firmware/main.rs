//! Host tests of the device runtime: quantisation math, kernels, networks, generation and
//! corrupt blobs. Everything is built with the writer, parsed and run for real.

mod common;
mod conditional;
mod corrupt;
mod decoder;
mod generate;
mod int8_reference;
mod kernels;
mod network;
mod quant;
mod time_groups;
