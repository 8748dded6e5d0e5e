//! Who should own each partition: a pure function of who is there and who owns what now,
//! so every instance computes the same plan from the same table and acts only on its part
//! of it (claims what it is given and is free, releases what it is to give up).
//!
//! The plan is balanced (every member gets the floor or the ceiling of partitions /
//! members) and moves as little as it can: a partition stays with a live owner within its
//! share; only the rest move, to the members with the fewest. When a member joins, the
//! others give up just enough for it; when one leaves, only its partitions move.

use std::collections::{BTreeMap, BTreeSet};

/// The owner planned for each partition, by partition number; `None` only when there
/// are no members.
pub fn plan<'a>(
    partitions: u32,
    members: &'a BTreeSet<String>,
    owners: &BTreeMap<u32, String>,
) -> Vec<Option<&'a str>> {
    let mut planned: Vec<Option<&str>> = vec![None; partitions as usize];
    if members.is_empty() {
        return planned;
    }
    let count = u32::try_from(members.len()).unwrap_or(u32::MAX);
    let (base, extra) = (partitions / count, partitions % count);
    let held = |member: &str| owners.values().filter(|owner| owner.as_str() == member).count();
    // The larger shares go to those holding the most already (then by name): fewer moves.
    let mut by_holding: Vec<&str> = members.iter().map(String::as_str).collect();
    by_holding.sort_by_key(|member| (std::cmp::Reverse(held(member)), *member));
    let share: BTreeMap<&str, u32> = by_holding
        .iter()
        .enumerate()
        .map(|(rank, member)| (*member, base + u32::from((rank as u32) < extra)))
        .collect();
    let mut given: BTreeMap<&str, u32> = members.iter().map(|member| (member.as_str(), 0)).collect();
    for (partition, owner) in owners.range(..partitions) {
        let Some((member, count)) = given.get_key_value(owner.as_str()).map(|(member, count)| (*member, *count)) else {
            continue;
        };
        if count < share[member] {
            planned[*partition as usize] = Some(member);
            given.insert(member, count + 1);
        }
    }
    for slot in planned.iter_mut().filter(|slot| slot.is_none()) {
        let (member, count) = given
            .iter()
            .filter(|(member, count)| **count < share[**member])
            .min_by_key(|(member, count)| (**count, **member))
            .map(|(member, count)| (*member, *count))
            .expect("the shares add up to the partitions");
        *slot = Some(member);
        given.insert(member, count + 1);
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn owners_of(planned: &[Option<&str>]) -> BTreeMap<u32, String> {
        planned.iter().enumerate().filter_map(|(p, owner)| Some((p as u32, (*owner)?.to_owned()))).collect()
    }

    fn moved(before: &BTreeMap<u32, String>, after: &[Option<&str>]) -> usize {
        before.iter().filter(|(p, owner)| after[**p as usize] != Some(owner.as_str())).count()
    }

    #[test]
    fn sixteen_over_three_is_six_five_five_and_a_fourth_takes_four() {
        let (abc, abcd) = (members(&["a", "b", "c"]), members(&["a", "b", "c", "d"]));
        let three = plan(16, &abc, &BTreeMap::new());
        let counts = |planned: &[Option<&str>], m: &str| planned.iter().filter(|o| **o == Some(m)).count();
        assert_eq!([counts(&three, "a"), counts(&three, "b"), counts(&three, "c")], [6, 5, 5]);
        let before = owners_of(&three);
        let four = plan(16, &abcd, &before);
        assert_eq!(counts(&four, "d"), 4);
        assert_eq!(moved(&before, &four), 4, "only what d takes moves");
    }

    #[test]
    fn no_members_no_owners() {
        assert!(plan(4, &BTreeSet::new(), &BTreeMap::new()).iter().all(Option::is_none));
    }

    fn table() -> impl Strategy<Value = (u32, BTreeSet<String>, BTreeMap<u32, String>)> {
        (1u32..40, prop::collection::btree_set("[a-f]", 1..6)).prop_flat_map(|(partitions, members)| {
            let names: Vec<String> = members.iter().cloned().chain(["gone".to_owned()]).collect();
            let owners =
                prop::collection::btree_map(0..partitions, prop::sample::select(names), 0..partitions as usize);
            (Just(partitions), Just(members), owners)
        })
    }

    proptest! {
        #[test]
        fn every_partition_goes_to_a_member_within_its_share((partitions, members, owners) in table()) {
            let planned = plan(partitions, &members, &owners);
            let count = members.len() as u32;
            for member in &members {
                let given = planned.iter().filter(|owner| **owner == Some(member.as_str())).count() as u32;
                prop_assert!(given == partitions / count || given == partitions.div_ceil(count), "{member}: {given}");
            }
            prop_assert!(planned.iter().all(|owner| owner.is_some_and(|owner| members.contains(owner))));
        }

        #[test]
        fn a_plan_is_kept_as_it_is((partitions, members, owners) in table()) {
            let first = owners_of(&plan(partitions, &members, &owners));
            let again = plan(partitions, &members, &first);
            prop_assert_eq!(moved(&first, &again), 0);
        }

        #[test]
        fn a_member_leaving_moves_only_its_partitions((partitions, members, owners) in table()) {
            let settled = owners_of(&plan(partitions, &members, &owners));
            let leaving = members.iter().next().unwrap().clone();
            let rest: BTreeSet<String> = members.iter().filter(|m| **m != leaving).cloned().collect();
            let after = plan(partitions, &rest, &settled);
            let moved_of_others = settled.iter().filter(|(p, owner)| **owner != leaving && after[**p as usize] != Some(owner.as_str())).count();
            prop_assert_eq!(moved_of_others, 0);
        }

        #[test]
        fn a_member_joining_takes_only_its_share((partitions, members, owners) in table()) {
            let settled = owners_of(&plan(partitions, &members, &owners));
            let mut more = members.clone();
            more.insert("new".to_owned());
            let after = plan(partitions, &more, &settled);
            let taken = after.iter().filter(|owner| **owner == Some("new")).count();
            prop_assert_eq!(moved(&settled, &after), taken);
        }
    }
}
