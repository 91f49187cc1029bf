use super::*;

#[test]
fn the_container_id_is_the_last_line_of_run_output() {
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let out = format!("Trying to pull...\n{id}\n");
    assert_eq!(
        ContainerId::from_run_output(&out),
        Some(ContainerId(id.into()))
    );
    assert_eq!(ContainerId::from_run_output("0123456789a\n"), None);
    assert_eq!(ContainerId::from_run_output("Error: no such image\n"), None);
    assert_eq!(ContainerId::from_run_output(""), None);
}
