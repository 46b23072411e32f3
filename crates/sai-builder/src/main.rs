fn main() {
    eprintln!("sai-builder: not yet implemented");
    std::process::exit(2);
}
