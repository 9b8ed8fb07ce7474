//! The container's uid, gid and supplementary groups, resolved against the image's
//! `/etc/passwd` and `/etc/group` the way containerd's CRI plugin does
//! (`generateUserString`, `oci.WithUser`, `WithAdditionalGIDs`, `WithSupplementalGroups`).

use super::{SecurityContextSpec, SpecError, SupplementalGroupsPolicy, field};

/// The resolved identity of the container process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Primary gid first, then the rest, without duplicates.
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd (runc's default for `HOME`), `/` when unknown.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// The colon-separated fields of each record of an /etc/passwd-style file, skipping
/// blank lines and comments.
fn records(contents: Option<&str>) -> impl Iterator<Item = std::str::Split<'_, char>> {
    contents
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':'))
}

fn passwd_entries(contents: Option<&str>) -> impl Iterator<Item = PasswdEntry<'_>> {
    records(contents).filter_map(|mut parts| {
        let name = parts.next()?;
        let _password = parts.next()?;
        let uid = parts.next()?.parse().ok()?;
        let gid = parts.next()?.parse().ok()?;
        let _gecos = parts.next();
        let home = parts.next().unwrap_or("");
        Some(PasswdEntry {
            name,
            uid,
            gid,
            home,
        })
    })
}

fn group_entries(contents: Option<&str>) -> impl Iterator<Item = GroupEntry<'_>> {
    records(contents).filter_map(|mut parts| {
        let name = parts.next()?;
        let _password = parts.next()?;
        let gid = parts.next()?.parse().ok()?;
        let members = parts
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        Some(GroupEntry { name, gid, members })
    })
}

fn id_from_i64(value: i64, field: String) -> Result<u32, SpecError> {
    u32::try_from(value).map_err(|_| {
        SpecError::invalid(field, format!("{value} is not a valid id (0..=4294967295)"))
    })
}

/// Resolves the user of the container.
///
/// Precedence (containerd): `run_as_user`, then `run_as_username`, then the image's
/// `User`; `run_as_group` applies only with a CRI user and is an error without one.
pub(crate) fn resolve_user(
    sc: &SecurityContextSpec,
    image_user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let sc_field = field::SC;
    // (user part, group part, field the user part came from, field the group came from)
    let (user, grp, user_field, group_field): (String, Option<String>, String, String) =
        if let Some(uid) = sc.run_as_user {
            let uid = id_from_i64(uid, format!("{sc_field}.run_as_user"))?;
            let gid = sc
                .run_as_group
                .map(|g| id_from_i64(g, format!("{sc_field}.run_as_group")))
                .transpose()?;
            (
                uid.to_string(),
                gid.map(|g| g.to_string()),
                format!("{sc_field}.run_as_user"),
                format!("{sc_field}.run_as_group"),
            )
        } else if !sc.run_as_username.is_empty() {
            let gid = sc
                .run_as_group
                .map(|g| id_from_i64(g, format!("{sc_field}.run_as_group")))
                .transpose()?;
            (
                sc.run_as_username.clone(),
                gid.map(|g| g.to_string()),
                format!("{sc_field}.run_as_username"),
                format!("{sc_field}.run_as_group"),
            )
        } else if sc.run_as_group.is_some() {
            return Err(SpecError::invalid(
                format!("{sc_field}.run_as_group"),
                "run_as_group is set without run_as_user or run_as_username",
            ));
        } else {
            let (u, g) = match image_user.split_once(':') {
                Some((u, g)) => (u.to_string(), Some(g.to_string())),
                None => (image_user.to_string(), None),
            };
            let u = if u.is_empty() { "0".to_string() } else { u };
            let g = g.filter(|g| !g.is_empty());
            (
                u,
                g,
                "image.config.User".to_string(),
                "image.config.User".to_string(),
            )
        };

    // The user part: numeric uids need not exist in /etc/passwd (gid 0 then); names must.
    let (uid, mut gid, name, home) = match user.parse::<u32>() {
        Ok(uid) => match passwd_entries(passwd).find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name.to_string()), e.home.to_string()),
            None => (uid, 0, None, String::new()),
        },
        Err(_) => match passwd_entries(passwd).find(|e| e.name == user) {
            Some(e) => (e.uid, e.gid, Some(e.name.to_string()), e.home.to_string()),
            None => {
                return Err(SpecError::NotFound {
                    field: user_field,
                    kind: "user",
                    name: user,
                    file: "/etc/passwd",
                });
            }
        },
    };
    if let Some(g) = grp {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match group_entries(group).find(|e| e.name == g) {
                Some(e) => e.gid,
                None => {
                    return Err(SpecError::NotFound {
                        field: group_field,
                        kind: "group",
                        name: g,
                        file: "/etc/group",
                    });
                }
            },
        };
    }

    let mut additional = vec![gid];
    let mut push = |g: u32| {
        if !additional.contains(&g) {
            additional.push(g);
        }
    };
    if sc.supplemental_groups_policy == SupplementalGroupsPolicy::Merge
        && let Some(name) = &name
    {
        // Groups that list the user as a member; its primary group by name is skipped
        // as containerd does (the primary gid is already first).
        for e in
            group_entries(group).filter(|e| e.name != name && e.members.iter().any(|m| m == name))
        {
            push(e.gid);
        }
    }
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        push(id_from_i64(
            *g,
            format!("{sc_field}.supplemental_groups[{i}]"),
        )?);
    }
    let home = if home.is_empty() {
        "/".to_string()
    } else {
        home
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
app:x:1000:1000::/home/app:/bin/sh
broken line
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:app
www-data:x:33:
app:x:1000:app
video:x:44:app,www-data
audio:x:29:www-data
";

    fn sc() -> SecurityContextSpec {
        SecurityContextSpec::default()
    }

    struct Case {
        name: &'static str,
        sc: SecurityContextSpec,
        image_user: &'static str,
        passwd: Option<&'static str>,
        want: Result<(u32, u32, Vec<u32>, &'static str), &'static str>,
    }

    #[test]
    fn user_resolution_table() {
        let cases = vec![
            Case {
                name: "no user anywhere is root",
                sc: sc(),
                image_user: "",
                passwd: Some(PASSWD),
                want: Ok((0, 0, vec![0], "/root")),
            },
            Case {
                name: "run_as_user found in passwd takes its gid and groups",
                sc: SecurityContextSpec {
                    run_as_user: Some(1000),
                    ..sc()
                },
                image_user: "33",
                passwd: Some(PASSWD),
                want: Ok((1000, 1000, vec![1000, 1, 44], "/home/app")),
            },
            Case {
                name: "run_as_user unknown uid gets gid 0",
                sc: SecurityContextSpec {
                    run_as_user: Some(4242),
                    ..sc()
                },
                image_user: "",
                passwd: Some(PASSWD),
                want: Ok((4242, 0, vec![0], "/")),
            },
            Case {
                name: "run_as_user with run_as_group",
                sc: SecurityContextSpec {
                    run_as_user: Some(33),
                    run_as_group: Some(2000),
                    ..sc()
                },
                image_user: "",
                passwd: Some(PASSWD),
                want: Ok((33, 2000, vec![2000, 44, 29], "/var/www")),
            },
            Case {
                name: "run_as_user wins over run_as_username",
                sc: SecurityContextSpec {
                    run_as_user: Some(1),
                    run_as_username: "app".into(),
                    ..sc()
                },
                image_user: "",
                passwd: Some(PASSWD),
                want: Ok((1, 1, vec![1], "/usr/sbin")),
            },
            Case {
                name: "run_as_username resolved",
                sc: SecurityContextSpec {
                    run_as_username: "www-data".into(),
                    ..sc()
                },
                image_user: "",
                passwd: Some(PASSWD),
                want: Ok((33, 33, vec![33, 44, 29], "/var/www")),
            },
            Case {
                name: "run_as_username unknown",
                sc: SecurityContextSpec {
                    run_as_username: "nobody".into(),
                    ..sc()
                },
                image_user: "",
                passwd: Some(PASSWD),
                want: Err(
                    "config.linux.security_context.run_as_username: user \"nobody\" not found",
                ),
            },
            Case {
                name: "run_as_username without passwd file",
                sc: SecurityContextSpec {
                    run_as_username: "app".into(),
                    ..sc()
                },
                image_user: "",
                passwd: None,
                want: Err("user \"app\" not found"),
            },
            Case {
                name: "run_as_group alone is an error even with an image user",
                sc: SecurityContextSpec {
                    run_as_group: Some(5),
                    ..sc()
                },
                image_user: "app",
                passwd: Some(PASSWD),
                want: Err("invalid config.linux.security_context.run_as_group"),
            },
            Case {
                name: "negative run_as_user",
                sc: SecurityContextSpec {
                    run_as_user: Some(-1),
                    ..sc()
                },
                image_user: "",
                passwd: Some(PASSWD),
                want: Err("invalid config.linux.security_context.run_as_user"),
            },
            Case {
                name: "image uid",
                sc: sc(),
                image_user: "33",
                passwd: Some(PASSWD),
                want: Ok((33, 33, vec![33, 44, 29], "/var/www")),
            },
            Case {
                name: "image name",
                sc: sc(),
                image_user: "app",
                passwd: Some(PASSWD),
                want: Ok((1000, 1000, vec![1000, 1, 44], "/home/app")),
            },
            Case {
                name: "image uid:gid",
                sc: sc(),
                image_user: "1000:29",
                passwd: Some(PASSWD),
                want: Ok((1000, 29, vec![29, 1, 44], "/home/app")),
            },
            Case {
                name: "image name:group",
                sc: sc(),
                image_user: "app:audio",
                passwd: Some(PASSWD),
                want: Ok((1000, 29, vec![29, 1, 44], "/home/app")),
            },
            Case {
                name: "image uid without passwd",
                sc: sc(),
                image_user: "1234:5",
                passwd: None,
                want: Ok((1234, 5, vec![5], "/")),
            },
            Case {
                name: "image unknown group name",
                sc: sc(),
                image_user: "app:nogroup",
                passwd: Some(PASSWD),
                want: Err("image.config.User: group \"nogroup\" not found"),
            },
            Case {
                name: "image unknown user name",
                sc: sc(),
                image_user: "ghost",
                passwd: Some(PASSWD),
                want: Err("image.config.User: user \"ghost\" not found"),
            },
            Case {
                name: "merge adds CRI groups after image groups",
                sc: SecurityContextSpec {
                    run_as_username: "app".into(),
                    supplemental_groups: vec![5000, 44],
                    ..sc()
                },
                image_user: "",
                passwd: Some(PASSWD),
                want: Ok((1000, 1000, vec![1000, 1, 44, 5000], "/home/app")),
            },
            Case {
                name: "strict keeps only primary and CRI groups",
                sc: SecurityContextSpec {
                    run_as_username: "app".into(),
                    supplemental_groups: vec![5000],
                    supplemental_groups_policy: SupplementalGroupsPolicy::Strict,
                    ..sc()
                },
                image_user: "",
                passwd: Some(PASSWD),
                want: Ok((1000, 1000, vec![1000, 5000], "/home/app")),
            },
            Case {
                name: "bad supplemental group",
                sc: SecurityContextSpec {
                    supplemental_groups: vec![1, -3],
                    ..sc()
                },
                image_user: "",
                passwd: Some(PASSWD),
                want: Err("invalid config.linux.security_context.supplemental_groups[1]"),
            },
        ];
        for c in cases {
            let got = resolve_user(&c.sc, c.image_user, c.passwd, Some(GROUP));
            match (got, c.want) {
                (Ok(u), Ok((uid, gid, gids, home))) => {
                    assert_eq!(
                        (u.uid, u.gid, u.additional_gids, u.home.as_str()),
                        (uid, gid, gids, home),
                        "{}",
                        c.name
                    )
                }
                (Err(e), Err(msg)) => {
                    assert!(e.to_string().contains(msg), "{}: {e} lacks {msg:?}", c.name)
                }
                (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
            }
        }
    }
}
