//! Bucket content other clients may leave: keys XML cannot carry raw must not
//! blind a listing to their well-formed siblings.

use crate::support::*;

#[test]
fn a_key_with_a_control_character_does_not_hide_its_siblings() {
    let env = Env::new();
    env.put("docs/a.txt", b"first", &[]);
    env.put("docs/bad\u{1}name.txt", b"odd", &[]);
    env.put("docs/my file+1.txt", b"plus", &[]);
    env.put("docs/100%.txt", b"percent", &[]);
    env.put("top\u{1}level", b"odd at the root", &[]);
    env.put("z.txt", b"last", &[]);
    let mnt = env.mount();
    let mut names: Vec<String> = std::fs::read_dir(mnt.p("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["100%.txt", "a.txt", "bad\u{1}name.txt", "my file+1.txt"],
        "every key under docs/ shows, decoded"
    );
    assert_eq!(std::fs::read(mnt.p("docs/my file+1.txt")).unwrap(), b"plus");
    assert_eq!(std::fs::read(mnt.p("docs/100%.txt")).unwrap(), b"percent");
    assert_eq!(
        std::fs::read(mnt.p("docs/bad\u{1}name.txt")).unwrap(),
        b"odd"
    );
    assert_eq!(std::fs::read(mnt.p("z.txt")).unwrap(), b"last");
    assert!(mnt.p("top\u{1}level").exists());
    mnt.unmount();
}
