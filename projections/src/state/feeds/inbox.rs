//! Inboxes as ascending, capped vectors of post ids: insert, merge, remove; and the
//! journal of those changes, which replays them ([`replay`]).

use murmur_domain::PostId;

use super::INBOX_CAP;

/// Inserts `post` into an ascending inbox capped at [`INBOX_CAP`]; whether it changed.
pub(super) fn inbox_insert(inbox: &mut Vec<PostId>, post: PostId) -> bool {
    if inbox.len() >= INBOX_CAP && inbox.first().is_some_and(|&oldest| post < oldest) {
        return false;
    }
    match inbox.binary_search(&post) {
        Ok(_) => false,
        // Full (so `post` is newer than the oldest, `at` > 0): the oldest leaves and the
        // older part shifts down in place. Inserting first would grow the buffer past the cap,
        // doubling every full inbox's memory and copying it once after each start-up.
        Err(at) if inbox.len() == INBOX_CAP => {
            inbox.copy_within(1..at, 0);
            inbox[at - 1] = post;
            true
        }
        Err(at) => {
            inbox.insert(at, post);
            if inbox.len() > INBOX_CAP {
                inbox.drain(..inbox.len() - INBOX_CAP);
            }
            true
        }
    }
}

/// The union of an inbox and `posts` (ascending), capped at the newest [`INBOX_CAP`].
/// `merged` is scratch space, reused so that a merge allocates nothing.
pub(super) fn inbox_merge(
    inbox: &mut Vec<PostId>,
    posts: &[PostId],
    merged: &mut Vec<PostId>,
) -> bool {
    let before = inbox.len();
    let oldest_kept = inbox.first().copied();
    merged.clear();
    let (mut i, mut j) = (0, 0);
    while i < inbox.len() || j < posts.len() {
        let next = match (inbox.get(i), posts.get(j)) {
            (Some(&a), Some(&b)) if a == b => {
                i += 1;
                j += 1;
                a
            }
            (Some(&a), Some(&b)) if a < b => {
                i += 1;
                a
            }
            (Some(&a), None) => {
                i += 1;
                a
            }
            (_, Some(&b)) => {
                j += 1;
                b
            }
            (None, None) => break,
        };
        merged.push(next);
    }
    if merged.len() > INBOX_CAP {
        merged.drain(..merged.len() - INBOX_CAP);
    }
    let changed = merged.len() != before || merged.first().copied() != oldest_kept;
    if changed {
        inbox.clear();
        inbox.extend_from_slice(merged);
    }
    changed
}

/// Removes from an ascending inbox every post of the ascending `posts`, pushing those it
/// removed onto `removed`; whether it changed.
pub(super) fn inbox_remove_all(
    inbox: &mut Vec<PostId>,
    posts: &[PostId],
    removed: &mut Vec<PostId>,
) -> bool {
    let (Some(&first), Some(&last)) = (inbox.first(), inbox.last()) else {
        return false;
    };
    let start = posts.partition_point(|&p| p < first);
    let end = posts.partition_point(|&p| p <= last);
    let posts = &posts[start..end];
    if posts.is_empty() {
        return false;
    }
    let before = inbox.len();
    let mut j = 0;
    inbox.retain(|&p| {
        while j < posts.len() && posts[j] < p {
            j += 1;
        }
        let gone = j < posts.len() && posts[j] == p;
        if gone {
            removed.push(p);
        }
        !gone
    });
    inbox.len() != before
}

/// One change of an inbox in the journal: a post id (always positive) added by
/// [`inbox_insert`], or its negation, removed.
pub type JournalEntry = PostId;

/// Applies a journal entry as the state applied it, so that replaying an inbox's entries in
/// order from the inbox they started from gives the inbox they made. A merge is journaled as
/// the insertion of each merged post: inserting one by one into a capped inbox keeps the
/// newest [`INBOX_CAP`] of the union, which is what the merge keeps.
pub fn replay(inbox: &mut Vec<PostId>, entry: JournalEntry) {
    if entry > 0 {
        inbox_insert(inbox, entry);
    } else if let Ok(at) = inbox.binary_search(&-entry) {
        inbox.remove(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inboxes_keep_the_newest_and_merge_as_sets() {
        let mut inbox: Vec<PostId> = (1..=INBOX_CAP as i64).collect();
        assert!(!inbox_insert(&mut inbox, 0), "older than a full inbox");
        assert!(inbox_insert(&mut inbox, 1000));
        assert_eq!((inbox[0], inbox.len()), (2, INBOX_CAP));
        assert!(!inbox_insert(&mut inbox, 1000), "no duplicates");
        assert!(inbox_merge(
            &mut inbox,
            &[1, 500, 1001, 1002],
            &mut Vec::new()
        ));
        assert_eq!(inbox.len(), INBOX_CAP);
        assert_eq!(&inbox[inbox.len() - 3..], &[1000, 1001, 1002]);
        assert_eq!(inbox[0], 4);
        let mut removed = Vec::new();
        assert!(inbox_remove_all(
            &mut inbox,
            &[3, 4, 5, 1001, 2000],
            &mut removed
        ));
        assert_eq!(removed, [4, 5, 1001]);
        assert_eq!(inbox.len(), INBOX_CAP - 3);
        assert!(!inbox_remove_all(&mut inbox, &[1, 2, 3], &mut removed));
    }

    #[test]
    fn a_full_inbox_takes_new_posts_in_place() {
        let mut inbox: Vec<PostId> = (1..=INBOX_CAP as i64).map(|i| i * 10).collect();
        let capacity = inbox.capacity();
        let mut expected = inbox.clone();
        for post in [15, 8005, 4321, 9000] {
            assert!(inbox_insert(&mut inbox, post));
            expected.push(post);
            expected.sort_unstable();
            expected.remove(0);
            assert_eq!(inbox, expected);
        }
        assert_eq!(
            inbox.capacity(),
            capacity,
            "a full inbox's buffer never grows"
        );
    }

    #[test]
    fn replaying_a_merge_as_insertions_gives_the_merge() {
        // A full inbox of even ids, merged with odd ones around its oldest entry.
        let start: Vec<PostId> = (1..=INBOX_CAP as i64).map(|i| i * 2).collect();
        let posts: Vec<PostId> = (0..40).map(|i| i * 2 + 1).chain([5000, 5001]).collect();
        let mut merged = start.clone();
        assert!(inbox_merge(&mut merged, &posts, &mut Vec::new()));
        let mut replayed = start;
        for &p in &posts {
            replay(&mut replayed, p);
        }
        assert_eq!(replayed, merged);
        replay(&mut replayed, -5000);
        replay(&mut replayed, -7); // not there: nothing happens
        assert_eq!(replayed.len(), INBOX_CAP - 1);
        assert!(!replayed.contains(&5000));
    }
}
