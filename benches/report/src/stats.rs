//! The two numbers the summary is built from: the median over rounds, and the ratio of
//! raftmq's median to a peer's.

/// The median of the finite values; the mean of the middle two for an even count. `None`
/// when there is no finite value (every round failed, or none reported the figure).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// raftmq / peer. `None` when either side is missing or the peer's figure is 0 (0 lost
/// against 0 lost says nothing, and an infinite ratio would read as a result).
pub fn ratio(raftmq: Option<f64>, peer: Option<f64>) -> Option<f64> {
    let (ours, theirs) = (raftmq?, peer?);
    let r = ours / theirs;
    (theirs != 0.0 && r.is_finite()).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        // Unsorted input with an outlier: the median ignores its size.
        assert_eq!(median(&[10.0, 1e9, 11.0]), Some(11.0));
    }

    #[test]
    fn median_skips_non_finite_and_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[f64::NAN, 5.0, f64::INFINITY, 1.0]), Some(3.0));
    }

    #[test]
    fn ratio_is_raftmq_over_peer() {
        assert_eq!(ratio(Some(200.0), Some(100.0)), Some(2.0));
        assert_eq!(ratio(Some(50.0), Some(100.0)), Some(0.5));
        assert_eq!(ratio(Some(0.0), Some(100.0)), Some(0.0));
    }

    #[test]
    fn ratio_undefined_cases() {
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(Some(0.0), Some(0.0)), None);
    }
}
