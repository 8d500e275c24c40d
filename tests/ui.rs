//! Every misuse of `#[dogpile]` is a compile error at the user's tokens: one mistake per file
//! under `tests/ui/`, its expected message beside it in a `.stderr` file.

#[test]
fn misuse_is_a_compile_error_at_the_offending_tokens() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
