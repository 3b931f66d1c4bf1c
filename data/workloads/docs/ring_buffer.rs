/// A fixed-capacity ring buffer that overwrites the oldest element when full.
pub struct Ring<T> {
    items: Vec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T> Ring<T> {
    pub fn new(capacity: usize) -> Self {
        Self { items: (0..capacity).map(|_| None).collect(), head: 0, len: 0 }
    }

    pub fn push(&mut self, value: T) {
        let cap = self.items.len();
        let tail = (self.head + self.len) % cap;
        self.items[tail] = Some(value);
        if self.len == cap {
            self.head = (self.head + 1) % cap;
        } else {
            self.len += 1;
        }
    }

    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let v = self.items[self.head].take();
        self.head = (self.head + 1) % self.items.len();
        self.len -= 1;
        v
    }
}
