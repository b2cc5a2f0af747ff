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

/// An empty vector, with the capacity of the last one of its type given back on this
/// thread.
pub fn take<T: 'static>() -> Vec<T> {
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        match slots.iter().position(|b| b.is::<Vec<T>>()) {
            Some(i) => {
                let mut v = *slots.swap_remove(i).downcast::<Vec<T>>().expect("checked type");
                v.clear();
                v
            }
            None => Vec::new(),
        }
    })
}

/// A vector of `len` elements with whatever this thread's last one of its type held (or
/// `fill`): for a caller that writes every element before reading it, which saves zeroing
/// buffers that are about to be overwritten.
pub fn take_len<T: Copy + 'static>(len: usize, fill: T) -> Vec<T> {
    let mut v = SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        let i = slots.iter().position(|b| b.is::<Vec<T>>())?;
        Some(*slots.swap_remove(i).downcast::<Vec<T>>().expect("checked type"))
    });
    let mut v = v.take().unwrap_or_default();
    if v.len() < len {
        v.resize(len, fill);
    }
    v.truncate(len);
    v
}

/// Keep `v`'s memory for the next [`take`] of its type on this thread.
pub fn give_back<T: 'static>(v: Vec<T>) {
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        if !slots.iter().any(|b| b.is::<Vec<T>>()) {
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
    }
}
