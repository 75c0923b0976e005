/**
 * A promise that resolves when `open` is called (Promise.withResolvers, which Node 20 lacks):
 * what a test holds something with until it says so. Opening twice is harmless.
 */
export interface Latch {
  opened: Promise<void>;
  open(): void;
}

export function latch(): Latch {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}
