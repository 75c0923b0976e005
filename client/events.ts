import { type EventSourceMessage, EventSourceParserStream } from 'eventsource-parser/stream';

/**
 * The messages of a `text/event-stream` body, in order, until the server ends it. Read from
 * fetch's body rather than with `EventSource`, which can send no `Authorization` header.
 */
export async function* readEventStream(body: ReadableStream<Uint8Array>): AsyncGenerator<EventSourceMessage> {
  const reader = body
    .pipeThrough(
      // DOM's and Node's typings of TextDecoderStream differ (BufferSource or Uint8Array in); both take Uint8Array.
      new TextDecoderStream() as unknown as TransformStream<Uint8Array, string>,
    )
    .pipeThrough(new EventSourceParserStream())
    .getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    // A consumer that stops early closes the connection.
    await reader.cancel().catch(() => undefined);
  }
}
