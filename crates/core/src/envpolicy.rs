//! Which environment variables may reach a sandboxed command. Secrets of the host
//! process (API keys, tokens, database URLs) must never leak into an agent's shell, so
//! names that look secret are dropped before the caller's own variables are layered on.

use std::collections::BTreeMap;

/// Substrings (of the upper-cased name) that mark a variable as secret.
pub const SECRET_NAME_PARTS: &[&str] = &["KEY", "SECRET", "TOKEN", "PASS", "CREDENTIAL", "DSN"];

/// Exact names that carry credentials without saying so.
pub const SECRET_NAMES: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_URI",
    "REDIS_URL",
    "MONGODB_URI",
    "MONGO_URL",
    "AMQP_URL",
    "RABBITMQ_URL",
    "POSTGRES_URL",
    "POSTGRESQL_URL",
    "MYSQL_URL",
    "CLICKHOUSE_URL",
    "CONNECTION_STRING",
    "CONN_STR",
    "GH_PAT",
    "GITHUB_PAT",
    "MYSQL_PWD",
    "REDISCLI_AUTH",
    "REDIS_AUTH",
    "PGSERVICEFILE",
];

/// Whether `name` looks like it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_PARTS.iter().any(|p| upper.contains(p)) || SECRET_NAMES.contains(&upper.as_str())
}

/// The base environment with secret-looking names removed, then `extra` layered on top
/// (caller-supplied variables win even when their names look secret: the caller chose
/// to pass them).
pub fn scrub<I>(base: I, extra: &BTreeMap<String, String>) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut env: BTreeMap<String, String> = base
        .into_iter()
        .filter(|(k, _)| !is_secret_name(k))
        .collect();
    for (k, v) in extra {
        env.insert(k.clone(), v.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_secrets_keeps_the_rest() {
        let base = [
            ("PATH", "/usr/bin"),
            ("OPENAI_API_KEY", "sk"),
            ("github_token", "t"),
            ("DATABASE_URL", "pg://"),
            ("db_password", "x"),
            ("SENTRY_DSN", "x"),
            ("AWS_CREDENTIALS", "x"),
            ("LANG", "C.UTF-8"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut extra = BTreeMap::new();
        extra.insert("MY_TOKEN".to_owned(), "given".to_owned());
        let env = scrub(base, &extra);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["LANG", "MY_TOKEN", "PATH"]);
    }
}
