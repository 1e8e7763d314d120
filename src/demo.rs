//! Demo data for `likewise serve --demo`: a few users with known passwords, posts,
//! comments, a reply, likes, collects and a conversation, so that the bundled page
//! is lively on first run.
//!
//! Everything goes through the domain layer, exactly as if the users had clicked,
//! so counters and notifications come from the same tasks as in real use. Seeding is
//! idempotent: each item is looked up before it is created, so a second start (or a
//! start after an interrupted one) adds only what is missing and never duplicates.

use crate::domain::{DomainResult, Social};

/// A demo account.
#[derive(Debug, Clone, Copy)]
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
}

/// Creates whatever demo data is missing.
pub async fn seed(social: &Social) -> DomainResult<SeedReport> {
    let mut report = SeedReport::default();
    let mut users = Vec::with_capacity(USERS.len());
    for u in USERS {
        let user = match social.user_by_name(u.name)? {
            Some(user) => user,
            None => {
                report.users_created += 1;
                social
                    .register(u.name.to_owned(), u.password.to_owned())
                    .await?
                    .user
            }
        };
        users.push(user.id);
    }

    let existing = existing_posts(social)?;
    let mut posts = Vec::with_capacity(POSTS.len());
    for &(author, title, body) in POSTS {
        let author = users[author];
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
        posts.push(id);
    }

    let mut comments: Vec<u64> = Vec::with_capacity(COMMENTS.len());
    for &(post, author, body, parent) in COMMENTS {
        let (post, author) = (posts[post], users[author]);
        let parent = parent.map(|i| comments[i]);
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
        comments.push(id);
    }

    for &(user, post) in LIKES {
        social.like_post(users[user], posts[post]).await?;
    }
    for &(user, post) in COLLECTS {
        social.collect(users[user], posts[post]).await?;
    }
    social.like_comment(users[0], comments[0]).await?;

    let (a, b) = (users[MESSAGES[0].0], users[MESSAGES[0].1]);
    if social.conversation(a, b, 1, None)?.items.is_empty() {
        for &(from, to, body) in MESSAGES {
            social
                .send_message(users[from], users[to], body.to_owned())
                .await?;
            report.messages_sent += 1;
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

/// Seeds and logs the demo accounts; a failure is logged, never fatal.
pub async fn seed_and_announce(social: &Social) {
    match seed(social).await {
        Ok(report) => {
            tracing::info!(
                users = report.users_created,
                posts = report.posts_created,
                comments = report.comments_created,
                messages = report.messages_sent,
                "demo data ready"
            );
            for u in USERS {
                tracing::info!("demo user {} password {}", u.name, u.password);
            }
        }
        Err(e) => tracing::warn!(error = %e, "demo data not seeded"),
    }
}
