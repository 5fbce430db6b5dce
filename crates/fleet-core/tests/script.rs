//! Script tests for the domain: each case is a transcript of commands and what they printed.
//! Lines starting with `> ` are input; the lines after one are its expected output.
//!
//! Commands: `site NAME`, `env NAME`, `cluster NAME SITE ENV [K=V]...`, `remove NAME`,
//! `workload NAME URL TEMPLATE`, `publish WORKLOAD SHA`, `as ACTOR`, `labels NAME COUNT`
//! (registers a cluster with COUNT labels), `handover FROM TO TERM P99_US...` (records a
//! leadership hand-over; the new leader's p99 is 850 µs, the limit 10 ms), and the queries
//! `status`, `audit`, `verify`, `tamper SEQ` (changes one stored audit event, to show that
//! `verify` notices).

use std::collections::BTreeMap;

use fleet_core::{Command, Context, State};

fn run(script: &str) {
    let mut state = State::default();
    let mut actor = "test".to_string();
    let mut now_ms = 1_000;
    let mut transcript = String::new();
    for line in script.lines().map(str::trim) {
        let Some(input) = line.strip_prefix("> ") else {
            continue;
        };
        transcript.push_str(line);
        transcript.push('\n');
        let words: Vec<&str> = input.split_whitespace().collect();
        let command = match words.as_slice() {
            ["as", name] => {
                actor = name.to_string();
                continue;
            }
            ["status"] => {
                for row in state.status_rows() {
                    transcript.push_str(&format!(
                        "{} {} {} {} {}\n",
                        row.cluster,
                        row.site,
                        row.environment,
                        row.workload.as_deref().unwrap_or("-"),
                        row.desired_revision.map_or("-".to_string(), |r| format!(
                            "{}@v{}",
                            &r.as_str()[..7],
                            row.assignment_version.unwrap()
                        )),
                    ));
                }
                continue;
            }
            ["audit"] => {
                for e in state.audit_events() {
                    transcript.push_str(&format!("#{} {} {}\n", e.sequence, e.actor, e.summary));
                }
                continue;
            }
            ["verify"] => {
                match state.verify_audit() {
                    Ok(()) => transcript.push_str("chain ok\n"),
                    Err(e) => transcript.push_str(&format!("chain broken: {e}\n")),
                }
                continue;
            }
            ["tamper", seq] => {
                // Edited as text: a round trip through serde_json::Value would reorder the keys
                // of every stored command, and so change every event.
                let mut text = serde_json::to_string(&state).unwrap();
                let at = text.find(&format!("\"sequence\":{seq},")).unwrap();
                let actor = at + text[at..].find("\"actor\":\"").unwrap() + 9;
                text.insert_str(actor, "mallory-");
                state = serde_json::from_str(&text).unwrap();
                continue;
            }
            ["site", name] => Command::AddSite {
                name: name.to_string(),
            },
            ["env", name] => Command::AddEnvironment {
                name: name.to_string(),
            },
            ["cluster", name, site, env, labels @ ..] => Command::RegisterCluster {
                name: name.to_string(),
                site: site.to_string(),
                environment: env.to_string(),
                labels: labels
                    .iter()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_string(), v.to_string())
                    })
                    .collect(),
            },
            ["labels", name, count] => Command::RegisterCluster {
                name: name.to_string(),
                site: "oslo".into(),
                environment: "staging".into(),
                labels: (0..count.parse::<usize>().unwrap())
                    .map(|i| (format!("k{i}"), "v".to_string()))
                    .collect::<BTreeMap<_, _>>(),
            },
            ["remove", name] => Command::RemoveCluster {
                name: name.to_string(),
            },
            ["workload", name, url, template] => Command::CreateWorkload {
                name: name.to_string(),
                repo_url: url.to_string(),
                path_template: template.to_string(),
            },
            ["publish", workload, sha] => Command::PublishRelease {
                workload: workload.to_string(),
                revision: sha.to_string(),
                allow_rejected: false,
                override_freeze: false,
            },
            ["handover", from, to, term, p99s @ ..] => Command::RecordLeadershipHandover {
                from_node: from.parse().unwrap(),
                to_node: to.parse().unwrap(),
                term: term.parse().unwrap(),
                from_p99s_us: p99s.iter().map(|p| p.parse().unwrap()).collect(),
                to_p99_us: 850,
                limit_us: 10_000,
            },
            other => panic!("unknown script line {other:?}"),
        };
        now_ms += 1_000;
        let ctx = Context {
            now_ms,
            actor: actor.clone(),
            reason: String::new(),
        };
        let before = state.clone();
        match state.apply(&command, &ctx) {
            Ok(outcome) => transcript.push_str(&format!(
                "ok {}\n",
                serde_json::to_string(&outcome).unwrap()
            )),
            Err(error) => {
                assert_eq!(state, before, "a refused command must change nothing");
                transcript.push_str(&format!("error: {error} (hint: {})\n", error.hint()));
            }
        }
    }
    let expected: String = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(transcript, expected, "\n--- got ---\n{transcript}");
}

const SHA_A: &str = "3f2a000000000000000000000000000000000001";
const SHA_B: &str = "9c1b000000000000000000000000000000000002";

#[test]
fn cluster_registration_needs_a_known_site_and_environment() {
    run(r#"
        > cluster web-1 oslo staging
        error: site "oslo" not found (hint: add it first with `fleet-ctl site add NAME`)
        > site oslo
        ok {"type":"site_added","name":"oslo"}
        > cluster web-1 oslo qa
        error: environment "qa" not found (hint: use one of: staging, production)
        > cluster web-1 oslo staging tier=web
        ok {"type":"cluster_registered","name":"web-1","assignments":0}
        > cluster web-1 oslo production
        error: cluster "web-1" already exists (hint: choose another name, or remove the cluster first)
    "#);
}

#[test]
fn malformed_names_are_refused_naming_the_field() {
    run(r#"
        > site Oslo
        error: invalid site: "Oslo" contains 'O', which is not allowed (hint: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. oslo-prod-1))
        > site -oslo
        error: invalid site: "-oslo" must not start or end with '-' (hint: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. oslo-prod-1))
        > site oslo-1234567890-1234567890-1234567890-1234567890-1234567890-1234
        error: invalid site: 64 characters is over the limit of 63 (hint: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. oslo-prod-1))
        > site oslo
        ok {"type":"site_added","name":"oslo"}
        > cluster web_1 oslo staging
        error: invalid name: "web_1" contains '_', which is not allowed (hint: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. oslo-prod-1))
        > cluster web-1 oslo staging =v
        error: invalid labels: label key "" is not valid (hint: label keys and values use up to 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit)
    "#);
}

#[test]
fn over_limit_label_count_is_refused() {
    run(r#"
        > site oslo
        ok {"type":"site_added","name":"oslo"}
        > labels web-1 33
        error: invalid labels: 33 labels is over the limit of 32 (hint: keep the labels that select waves and drop the rest)
        > labels web-1 32
        ok {"type":"cluster_registered","name":"web-1","assignments":0}
    "#);
}

#[test]
fn workloads_need_a_fetchable_url_and_a_relative_path() {
    run(r#"
        > workload web ftp://example.no/web.git overlays/{environment}
        error: invalid repo_url: "ftp://example.no/web.git" is not a Git URL this fleet can fetch (hint: give a URL such as https://git.example.no/team/app.git, ssh://git@host/repo.git or file:///srv/git/app.git)
        > workload web https://git.example.no/web.git ../{environment}
        error: invalid path: "../{environment}" must not contain '..' (hint: give a relative path inside the repository, e.g. overlays/{environment}; the only placeholder is {environment})
        > workload web https://git.example.no/web.git overlays/{env}
        error: invalid path: "overlays/{env}" has a placeholder other than {environment} (hint: give a relative path inside the repository, e.g. overlays/{environment}; the only placeholder is {environment})
        > workload web https://git.example.no/web.git overlays/{environment}
        ok {"type":"workload_created","name":"web"}
        > workload api git@git.example.no:team/api.git deploy
        ok {"type":"workload_created","name":"api"}
    "#);
}

#[test]
fn publish_refuses_anything_but_a_full_sha() {
    run(r#"
        > workload web https://git.example.no/web.git overlays/{environment}
        ok {"type":"workload_created","name":"web"}
        > publish web main
        error: invalid revision: "main" is 4 characters long, a revision is 40 hex digits (hint: give the full 40-character commit SHA (git rev-parse HEAD), not a branch, tag or short SHA)
        > publish web 3f2a00000000000000000000000000000000000g
        error: invalid revision: "3f2a00000000000000000000000000000000000g" contains 'g', which is not a hex digit (hint: give the full 40-character commit SHA (git rev-parse HEAD), not a branch, tag or short SHA)
        > publish api 3f2a000000000000000000000000000000000001
        error: workload "api" not found (hint: create it first with `fleet-ctl workload create NAME --repo URL --path TEMPLATE`)
        > publish web 3F2A000000000000000000000000000000000001
        ok {"type":"release_published","workload":"web","revision":"3f2a000000000000000000000000000000000001","environment":"staging","clusters":[]}
    "#);
}

/// Each registration uses a version of its own (v1, v2 here), so the first release is v3.
#[test]
fn release_assigns_the_first_environment_only_and_versions_grow() {
    run(&format!(
        r#"
        > site oslo
        ok {{"type":"site_added","name":"oslo"}}
        > cluster stg-1 oslo staging
        ok {{"type":"cluster_registered","name":"stg-1","assignments":0}}
        > cluster prod-1 oslo production
        ok {{"type":"cluster_registered","name":"prod-1","assignments":0}}
        > workload web https://git.example.no/web.git overlays/{{environment}}
        ok {{"type":"workload_created","name":"web"}}
        > publish web {SHA_A}
        ok {{"type":"release_published","workload":"web","revision":"{SHA_A}","environment":"staging","clusters":["stg-1"]}}
        > status
        prod-1 oslo production - -
        stg-1 oslo staging web 3f2a000@v3
        > publish web {SHA_A}
        ok {{"type":"release_published","workload":"web","revision":"{SHA_A}","environment":"staging","clusters":[]}}
        > publish web {SHA_B}
        ok {{"type":"release_published","workload":"web","revision":"{SHA_B}","environment":"staging","clusters":["stg-1"]}}
        > status
        prod-1 oslo production - -
        stg-1 oslo staging web 9c1b000@v4
    "#
    ));
}

#[test]
fn a_cluster_registered_later_gets_its_environments_desired_revision() {
    run(&format!(
        r#"
        > site bergen
        ok {{"type":"site_added","name":"bergen"}}
        > workload web https://git.example.no/web.git overlays/{{environment}}
        ok {{"type":"workload_created","name":"web"}}
        > publish web {SHA_A}
        ok {{"type":"release_published","workload":"web","revision":"{SHA_A}","environment":"staging","clusters":[]}}
        > cluster stg-2 bergen staging
        ok {{"type":"cluster_registered","name":"stg-2","assignments":1}}
        > remove stg-2
        ok {{"type":"cluster_removed","name":"stg-2"}}
        > cluster stg-2 bergen staging
        ok {{"type":"cluster_registered","name":"stg-2","assignments":1}}
        > status
        stg-2 bergen staging web 3f2a000@v4
    "#
    ));
}

#[test]
fn every_committed_command_is_audited_and_refusals_are_not() {
    run(&format!(
        r#"
        > as alice
        > site oslo
        ok {{"type":"site_added","name":"oslo"}}
        > site oslo
        error: site "oslo" already exists (hint: sites are added once; list them with `fleet-ctl site list`)
        > as bob
        > env qa
        ok {{"type":"environment_added","name":"qa","position":2}}
        > workload web https://git.example.no/web.git overlays/{{environment}}
        ok {{"type":"workload_created","name":"web"}}
        > publish web {SHA_A}
        ok {{"type":"release_published","workload":"web","revision":"{SHA_A}","environment":"staging","clusters":[]}}
        > audit
        #1 alice site oslo added
        #2 bob environment qa added at position 2
        #3 bob workload web created from https://git.example.no/web.git at overlays/{{environment}}
        #4 bob release web@{SHA_A} published to staging: 0 clusters assigned
        > verify
        chain ok
        > tamper 2
        > verify
        chain broken: audit event 2: its hash does not match its contents
    "#
    ));
}

#[test]
fn apply_is_deterministic_for_the_same_commands_and_contexts() {
    let commands = [
        Command::AddSite {
            name: "oslo".into(),
        },
        Command::RegisterCluster {
            name: "a".into(),
            site: "oslo".into(),
            environment: "staging".into(),
            labels: BTreeMap::new(),
        },
        Command::CreateWorkload {
            name: "web".into(),
            repo_url: "https://x.no/web.git".into(),
            path_template: "overlays/{environment}".into(),
        },
        Command::PublishRelease {
            workload: "web".into(),
            revision: SHA_A.into(),
            allow_rejected: false,
            override_freeze: false,
        },
    ];
    let replay = || {
        let mut state = State::default();
        for (i, c) in commands.iter().enumerate() {
            let ctx = Context {
                now_ms: i as u64,
                actor: "a".into(),
                reason: "r".into(),
            };
            state.apply(c, &ctx).unwrap();
        }
        serde_json::to_string(&state).unwrap()
    };
    assert_eq!(replay(), replay());
}

#[test]
fn a_leadership_handover_is_audited_with_its_figures_and_changes_nothing_else() {
    run(r#"
        > as coordinator:1
        > handover 1 2 7 51234 50980 52001
        ok {"type":"leadership_handover_recorded","from_node":1,"to_node":2,"term":7}
        > handover 2 2 8 51234
        error: invalid to_node: leadership cannot move from node 2 to itself (hint: name the node that took leadership)
        > status
        > audit
        #1 coordinator:1 coordinator leadership moved from node 1 to node 2 in term 7: fdatasync p99 on node 1 was 51.2/50.9/52.0 ms in the last 3 seconds (limit 10.0 ms); 0.8 ms on node 2
        > verify
        chain ok
    "#);
}
