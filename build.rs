// A new migration folder must rebuild the binary that embeds the migrations (STACK.md).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=fhir-profiles");
}
