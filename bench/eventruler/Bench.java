import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import software.amazon.event.ruler.Machine;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Times aws/event-ruler's {@code Machine.rulesForJSONEvent(String)} (JSON parse included) over a
 * fixed list of events. Driven by bench/bench_eventruler.py.
 *
 * <pre>
 *   java -cp CLASSPATH Bench RULES.jsonl EVENTS.jsonl SECONDS ROUNDS WARMUP_SECONDS [COUNTS_OUT]
 * </pre>
 *
 * RULES.jsonl: one {"name": ..., "pattern": {...}} per line. EVENTS.jsonl: one raw event text per line.
 * SECONDS of timed work are split into ROUNDS rounds, after WARMUP_SECONDS of untimed passes.
 * Prints human-readable lines and one machine-readable "RESULT key=value ..." line.
 * COUNTS_OUT, if given, receives the number of matched rules of each event, one per line.
 */
public final class Bench {

    /** Results are summed here so the JIT cannot drop the calls. */
    private static long sink;

    private Bench() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: Bench RULES EVENTS SECONDS ROUNDS WARMUP_SECONDS [COUNTS_OUT]");
            System.exit(2);
        }
        final double seconds = Double.parseDouble(args[2]);
        final int rounds = Integer.parseInt(args[3]);
        final double warmup = Double.parseDouble(args[4]);

        final ObjectMapper mapper = new ObjectMapper();
        final Machine machine = Machine.builder().build();
        long started = System.nanoTime();
        int ruleCount = 0;
        try (BufferedReader in = Files.newBufferedReader(Paths.get(args[0]), StandardCharsets.UTF_8)) {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                if (line.isEmpty()) {
                    continue;
                }
                final JsonNode rule = mapper.readTree(line);
                machine.addRule(rule.get("name").asText(), mapper.writeValueAsString(rule.get("pattern")));
                ruleCount++;
            }
        }
        final double buildSeconds = (System.nanoTime() - started) / 1e9;

        final String[] events = readEvents(args[1]);
        if (events.length == 0) {
            throw new IllegalArgumentException("no events in " + args[1]);
        }

        // One pass for the match counts (also the first warm-up pass).
        long matched = 0;
        final int[] counts = new int[events.length];
        for (int i = 0; i < events.length; i++) {
            counts[i] = machine.rulesForJSONEvent(events[i]).size();
            matched += counts[i];
        }
        if (args.length > 5) {
            try (PrintWriter out = new PrintWriter(Files.newBufferedWriter(Paths.get(args[5]), StandardCharsets.UTF_8))) {
                for (int c : counts) {
                    out.println(c);
                }
            }
        }

        timed(machine, events, warmup);  // warm-up: let the JIT compile the hot paths

        final double[] rates = new double[rounds];
        for (int r = 0; r < rounds; r++) {
            rates[r] = timed(machine, events, seconds / rounds);
        }
        final double[] sorted = rates.clone();
        Arrays.sort(sorted);
        final double median = sorted.length % 2 == 1
                ? sorted[sorted.length / 2]
                : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
        final double best = sorted[sorted.length - 1];
        final double perEvent = (double) matched / events.length;

        System.out.printf("rules %d (built in %.2f s), events %d, rounds %d x %.2f s, warm-up %.2f s%n",
                ruleCount, buildSeconds, events.length, rounds, seconds / rounds, warmup);
        System.out.printf("events/s: median %.0f, best %.0f; matches/event %.4f (sink %d)%n",
                median, best, perEvent, sink);
        System.out.printf("RESULT rules=%d build_s=%.4f median=%.1f best=%.1f matches_per_event=%.6f%n",
                ruleCount, buildSeconds, median, best, perEvent);
    }

    private static String[] readEvents(String path) throws IOException {
        final List<String> events = new ArrayList<>();
        try (BufferedReader in = Files.newBufferedReader(Paths.get(path), StandardCharsets.UTF_8)) {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                if (!line.isEmpty()) {
                    events.add(line);
                }
            }
        }
        return events.toArray(new String[0]);
    }

    /** Events per second of rulesForJSONEvent over the events, cycled for about {@code seconds}. */
    private static double timed(Machine machine, String[] events, double seconds) throws Exception {
        final long budget = (long) (seconds * 1e9);
        final long started = System.nanoTime();
        long now = started;
        long done = 0;
        long found = 0;
        int i = 0;
        do {
            // Check the clock every 64 events: cheap next to a match, fine-grained enough for the budget.
            for (int k = 0; k < 64; k++) {
                found += machine.rulesForJSONEvent(events[i]).size();
                if (++i == events.length) {
                    i = 0;
                }
            }
            done += 64;
            now = System.nanoTime();
        } while (now - started < budget);
        sink += found;
        return done / ((now - started) / 1e9);
    }
}
