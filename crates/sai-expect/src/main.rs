//! `sai-expect` (see the library docs). Serial devices and ttys are a Unix
//! matter: as in the original Sai, there is no Windows build of it; the
//! binary there only says so.

#[cfg(unix)]
mod cli;

#[cfg(unix)]
fn main() {
    cli::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("sai-expect: supported on Unix only (it drives serial ttys)");
    std::process::exit(2);
}
