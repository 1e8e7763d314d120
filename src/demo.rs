//! Demo data for `likewise serve --demo`: a few users with known passwords, posts,
//! comments, a reply, likes, collects and a conversation, so that the bundled page
//! is lively on first run.
//!
//! Everything goes through the domain layer, exactly as if the users had clicked,
//! so counters and notifications come from the same tasks as in real use. Seeding is
//! idempotent: each item is looked up before it is created, so a second start (or a
//! start after an interrupted one) adds only what is missing and never duplicates.
//! A demo name that belongs to an account the demo did not create (its password is
//! not the demo's) is skipped with everything that account would have done, and is
//! neither announced nor offered on the demo page.

use crate::domain::{DomainResult, Social};

/// A demo account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoUser {
    /// Sign-in name.
    pub name: &'static str,
    /// Sign-in password (public: these accounts exist only for the demo).
    pub password: &'static str,
}

/// The demo accounts. Their passwords are printed at start-up and in the README.
pub const USERS: &[DemoUser] = &[
    DemoUser {
        name: "alice",
        password: "alice-demo",
    },
    DemoUser {
        name: "bob",
        password: "bob-demo-1",
    },
    DemoUser {
        name: "carol",
        password: "carol-demo",
    },
];

/// Demo posts: author (index into [`USERS`]), title, body.
const POSTS: &[(usize, &str, &str)] = &[
    (
        0,
        "Hello from likewise",
        "One binary instead of a web app, a task queue, a broker and a websocket \
         server. Like this post from another account and watch the bell.",
    ),
    (
        1,
        "Group commit, explained",
        "Hundreds of likes share one transaction and one fsync: every acknowledged \
         like is on disk, and it is still fast.",
    ),
    (
        2,
        "Weekend hike photos",
        "Three lakes, one thunderstorm, zero lost notifications. Collect this post to \
         find it again later.",
    ),
];

/// Demo comments: post (index into [`POSTS`]), author, body, and the index of the
/// earlier comment in this list it replies to.
const COMMENTS: &[(usize, usize, &str, Option<usize>)] = &[
    (
        0,
        1,
        "Welcome! The counters update live for everyone.",
        None,
    ),
    (
        0,
        0,
        "Thanks Bob, try liking it from a second window.",
        Some(0),
    ),
    (1, 2, "So that is why my likes never get lost.", None),
    (2, 0, "The second lake looks unreal.", None),
];

/// Demo likes and collects: (user, post).
const LIKES: &[(usize, usize)] = &[(1, 0), (2, 0), (0, 1), (2, 1), (0, 2)];
const COLLECTS: &[(usize, usize)] = &[(1, 2), (0, 1)];

/// Demo private messages: from, to, body.
const MESSAGES: &[(usize, usize, &str)] = &[
    (1, 0, "Hi Alice! Did the notification arrive instantly?"),
    (0, 1, "It did, before I even reloaded the page."),
];

/// What seeding did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// Accounts created now (0 on a second start).
    pub users_created: usize,
    /// Posts created now.
    pub posts_created: usize,
    /// Comments and replies created now.
    pub comments_created: usize,
    /// Messages sent now.
    pub messages_sent: usize,
    /// The demo accounts that exist with their documented passwords: the ones a
    /// visitor can sign in with.
    pub accounts: Vec<DemoUser>,
    /// Demo names taken by accounts the demo did not create (their password is not
    /// the demo's): left alone, together with everything the demo would have made
    /// them do.
    pub skipped: Vec<&'static str>,
}

/// Creates whatever demo data is missing.
///
/// A demo name may already belong to someone else's account (the demo shares the
/// data directory it is given). Such an account is never used: the demo does not
/// post, comment, like or write in its name, and does not announce its name.
pub async fn seed(social: &Social) -> DomainResult<SeedReport> {
    let mut report = SeedReport::default();
    // Per demo account: its id, or None when the name is someone else's.
    let mut users: Vec<Option<u64>> = Vec::with_capacity(USERS.len());
    for u in USERS {
        let id = match social.user_by_name(u.name)? {
            Some(user) if social.password_matches(u.name, u.password).await? => Some(user.id),
            Some(_) => None,
            None => {
                report.users_created += 1;
                let session = social
                    .register(u.name.to_owned(), u.password.to_owned())
                    .await?;
                Some(session.user.id)
            }
        };
        match id {
            Some(_) => report.accounts.push(*u),
            None => report.skipped.push(u.name),
        }
        users.push(id);
    }

    let existing = existing_posts(social)?;
    let mut posts: Vec<Option<u64>> = Vec::with_capacity(POSTS.len());
    for &(author, title, body) in POSTS {
        let Some(author) = users[author] else {
            posts.push(None);
            continue;
        };
        let found = existing
            .iter()
            .find(|(a, t, _)| *a == author && t == title)
            .map(|(_, _, id)| *id);
        let id = match found {
            Some(id) => id,
            None => {
                report.posts_created += 1;
                social
                    .create_post(author, title.to_owned(), body.to_owned())
                    .await?
                    .id
            }
        };
        posts.push(Some(id));
    }

    let mut comments: Vec<Option<u64>> = Vec::with_capacity(COMMENTS.len());
    for &(post, author, body, parent) in COMMENTS {
        let parent = match parent {
            Some(i) => match comments[i] {
                Some(id) => Some(id),
                None => {
                    comments.push(None);
                    continue;
                }
            },
            None => None,
        };
        let (Some(post), Some(author)) = (posts[post], users[author]) else {
            comments.push(None);
            continue;
        };
        let (present, _) = social.comments(post, social.limits().max_page, None)?;
        let id = match present
            .iter()
            .find(|c| c.author_id == author && c.body == body)
        {
            Some(c) => c.id,
            None => {
                report.comments_created += 1;
                social
                    .add_comment(author, post, body.to_owned(), parent)
                    .await?
                    .id
            }
        };
        comments.push(Some(id));
    }

    for &(user, post) in LIKES {
        if let (Some(user), Some(post)) = (users[user], posts[post]) {
            social.like_post(user, post).await?;
        }
    }
    for &(user, post) in COLLECTS {
        if let (Some(user), Some(post)) = (users[user], posts[post]) {
            social.collect(user, post).await?;
        }
    }
    if let (Some(user), Some(comment)) = (users[0], comments[0]) {
        social.like_comment(user, comment).await?;
    }

    if let (Some(a), Some(b)) = (users[MESSAGES[0].0], users[MESSAGES[0].1]) {
        if social.conversation(a, b, 1, None)?.items.is_empty() {
            for &(from, to, body) in MESSAGES {
                if let (Some(from), Some(to)) = (users[from], users[to]) {
                    social.send_message(from, to, body.to_owned()).await?;
                    report.messages_sent += 1;
                }
            }
        }
    }
    Ok(report)
}

/// (author, title, id) of the posts already stored, newest first.
fn existing_posts(social: &Social) -> DomainResult<Vec<(u64, String, u64)>> {
    let limit = social.limits().max_page;
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = social.posts(limit, before)?;
        out.extend(page.items.into_iter().map(|p| (p.author_id, p.title, p.id)));
        match page.next_before {
            Some(next) => before = Some(next),
            None => return Ok(out),
        }
    }
}

/// Seeds and logs the demo accounts; a failure is logged, never fatal. Returns the
/// accounts a visitor can sign in with (for the demo page's sign-in buttons).
pub async fn seed_and_announce(social: &Social) -> Vec<DemoUser> {
    match seed(social).await {
        Ok(report) => {
            tracing::info!(
                users = report.users_created,
                posts = report.posts_created,
                comments = report.comments_created,
                messages = report.messages_sent,
                "demo data ready"
            );
            for u in &report.accounts {
                tracing::info!("demo user {} password {}", u.name, u.password);
            }
            for name in &report.skipped {
                tracing::warn!(
                    "demo user {name} skipped: that name belongs to an account the demo did not create (use a data directory of its own: --demo without --data uses ./likewise-demo)"
                );
            }
            report.accounts
        }
        Err(e) => {
            tracing::warn!(error = %e, "demo data not seeded");
            Vec::new()
        }
    }
}
