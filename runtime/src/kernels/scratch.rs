//! Per-thread scratch buffers, so that a kernel called for every image and layer reuses
//! its memory instead of allocating (and the kernel zeroing fresh pages) each time.
//!
//! A buffer is taken out of the thread's slot and given back after use, never borrowed
//! across a call: a rayon worker that picks up another task while it waits finds the slot
//! empty and allocates, rather than aliasing the buffer in use.

use std::any::Any;
use std::cell::RefCell;

thread_local! {
    static SLOTS: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers of one type a thread keeps (a kernel takes a few at once).
const KEPT_PER_TYPE: usize = 4;

/// This thread's kept buffer of type `Vec<T>` that `better` prefers, taken out.
fn take_kept<T: 'static>(better: impl Fn(&Vec<T>, &Vec<T>) -> bool) -> Option<Vec<T>> {
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        let mut best: Option<usize> = None;
        for (i, b) in slots.iter().enumerate() {
            let Some(v) = b.downcast_ref::<Vec<T>>() else { continue };
            if best.is_none_or(|j| better(v, slots[j].downcast_ref().expect("checked type"))) {
                best = Some(i);
            }
        }
        best.map(|i| *slots.swap_remove(i).downcast::<Vec<T>>().expect("checked type"))
    })
}

/// An empty vector, with the largest capacity of those of its type given back on this
/// thread.
pub fn take<T: 'static>() -> Vec<T> {
    let mut v = take_kept::<T>(|a, b| a.capacity() > b.capacity()).unwrap_or_default();
    v.clear();
    v
}

/// `len` elements with whatever a buffer of its type given back on this thread held (the
/// shortest that is long enough, else the longest; `fill` beyond it): for a caller that
/// writes every element before reading it, which saves zeroing buffers that are about to be
/// overwritten. Dropped, it goes back to this thread's slot at the full
/// length its buffer has had, so that a longer take later need not write the elements a
/// shorter one left out (a `Vec` truncated to each take's length was filled again on the
/// next longer one: 3-10 % of a 16-bit mobilenet's time).
pub fn take_len<T: Copy + 'static>(len: usize, fill: T) -> Scratch<T> {
    let fits = |v: &Vec<T>| v.len() >= len;
    let mut buffer = take_kept::<T>(|a, b| match (fits(a), fits(b)) {
        (true, true) => a.len() < b.len(),
        (true, false) => true,
        (false, true) => false,
        (false, false) => a.len() > b.len(),
    })
    .unwrap_or_default();
    if buffer.len() < len {
        buffer.resize(len, fill);
    }
    Scratch { buffer, len }
}

/// A buffer from [`take_len`]: its first `len` elements, as a slice.
pub struct Scratch<T: 'static> {
    buffer: Vec<T>,
    len: usize,
}

impl<T> std::ops::Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buffer[..self.len]
    }
}

impl<T> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buffer[..self.len]
    }
}

impl<T: 'static> Drop for Scratch<T> {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buffer));
    }
}

/// Keep `v`'s memory for a later [`take`] or [`take_len`] of its type on this thread (a
/// [`Scratch`] goes back when dropped).
pub fn give_back<T: 'static>(v: Vec<T>) {
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        if slots.iter().filter(|b| b.is::<Vec<T>>()).count() < KEPT_PER_TYPE {
            slots.push(Box::new(v));
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_buffer_comes_back_empty_with_its_capacity() {
        let mut v = super::take::<u16>();
        v.extend([1, 2, 3]);
        let capacity = v.capacity();
        super::give_back(v);
        let again = super::take::<u16>();
        assert!(again.is_empty() && again.capacity() == capacity);
        // Another type has its own slot; a second take before a give-back gets a new one.
        assert_eq!(super::take::<u16>().capacity(), 0);
        assert_eq!(super::take::<u32>().capacity(), 0);
        super::give_back(again);
    }

    #[test]
    fn take_len_picks_the_shortest_buffer_long_enough() {
        super::give_back(vec![1u8; 100]);
        super::give_back(vec![2u8; 10]);
        // The short one serves a short request, and the long one a long one.
        let short = super::take_len(5, 0u8);
        assert_eq!(*short, [2; 5]);
        let long = super::take_len(50, 0u8);
        assert_eq!(*long, [1; 50]);
        // Back at its full length: a longer take finds the elements the shorter one left.
        drop(long);
        let longer = super::take_len(80, 7u8);
        assert_eq!(*longer, [1; 80]);
        drop(longer);
        // Longer than any: the longest, extended with the fill.
        let longest = super::take_len(120, 7u8);
        assert_eq!((longest[99], longest[100], longest.len()), (1, 7, 120));
        drop(short);
    }
}
