//! Addresses given on command lines and in requests: `HOST:PORT`, HOST an IP address (IPv6 in
//! brackets, RFC 3986 section 3.2.2) or a DNS name, PORT 1 to 65535. Parsed once, where the
//! address enters, so that nothing later fails (or panics) on one.

use tonic::codegen::http::uri::Authority;

/// `value` if it is a `HOST:PORT` as above; else a message that says what is wrong and shows
/// the form, e.g. for `a b`: "\"a b\" is not HOST:PORT (e.g. 10.0.0.5:7400 or
/// coordinator-1.oslo:7400): invalid uri character".
/// Spaces around it are dropped (`--endpoints "a:1, b:2"`).
pub fn host_port(value: &str) -> Result<String, String> {
    let value = value.trim();
    let form = "HOST:PORT (e.g. 10.0.0.5:7400 or coordinator-1.oslo:7400)";
    let authority: Authority = value
        .parse()
        .map_err(|e| format!("{value:?} is not {form}: {e}"))?;
    if value.contains('@') {
        return Err(format!(
            "{value:?} is not {form}: no user name goes before the host"
        ));
    }
    match authority.port_u16() {
        None => Err(format!("{value:?} is not {form}: the port is missing")),
        Some(0) => Err(format!("{value:?} is not {form}: port 0 cannot be reached")),
        Some(_) if authority.host().is_empty() => {
            Err(format!("{value:?} is not {form}: the host is missing"))
        }
        Some(_) => Ok(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_pass_and_everything_else_is_refused_with_the_form() {
        for good in [
            "127.0.0.1:7400",
            "[::1]:7400",
            "coordinator-1.oslo:7400",
            "a:1",
        ] {
            assert_eq!(host_port(good).as_deref(), Ok(good));
        }
        assert_eq!(host_port(" b:2").as_deref(), Ok("b:2"));
        for bad in [
            "a b:7400",
            "a b",
            "127.0.0.1",
            "127.0.0.1:0",
            ":7400",
            "127.0.0.1:99999",
            "user@host:7400",
            "http://127.0.0.1:7400",
            "",
        ] {
            let refusal = host_port(bad).expect_err(bad);
            assert!(refusal.contains("HOST:PORT (e.g."), "{bad}: {refusal}");
        }
    }
}
