fn main() {
    eprintln!("sai-expect: not yet implemented");
    std::process::exit(2);
}
