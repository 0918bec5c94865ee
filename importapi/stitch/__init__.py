"""The Stitch Import API: the routes target-stitch (every Singer tap), stitchclient and the
Java and Clojure clients send to, as an adapter onto the push model."""
