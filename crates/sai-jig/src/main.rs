fn main() {
    eprintln!("sai-jig: not yet implemented");
    std::process::exit(2);
}
