fn main() {
    eprintln!("sai-server: not yet implemented");
    std::process::exit(2);
}
