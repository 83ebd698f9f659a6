package org.xmodal.opensearch.rerank;

import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Deque;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.opensearch.action.search.SearchRequest;
import org.opensearch.action.search.SearchResponse;
import org.opensearch.action.search.SearchResponseSections;
import org.opensearch.common.xcontent.XContentFactory;
import org.opensearch.common.xcontent.XContentHelper;
import org.opensearch.common.xcontent.json.JsonXContent;
import org.opensearch.common.xcontent.support.XContentMapValues;
import org.opensearch.core.action.ActionListener;
import org.opensearch.core.common.bytes.BytesReference;
import org.opensearch.core.xcontent.XContentBuilder;
import org.opensearch.ingest.ConfigurationUtils;
import org.opensearch.search.SearchExtBuilder;
import org.opensearch.search.SearchHit;
import org.opensearch.search.SearchHits;
import org.opensearch.search.aggregations.Aggregations;
import org.opensearch.search.aggregations.InternalAggregations;
import org.opensearch.search.internal.InternalSearchResponse;
import org.opensearch.search.pipeline.AbstractProcessor;
import org.opensearch.search.pipeline.PipelineProcessingContext;
import org.opensearch.search.pipeline.Processor;
import org.opensearch.search.pipeline.SearchResponseProcessor;
import org.opensearch.search.profile.ProfileShardResult;
import org.opensearch.search.profile.SearchProfileShardResults;

/**
 * Search response processor {@code xmodal_rerank}: sends the first {@code top_k} hits and the query of
 * the request ext {@code xmodal} to {@code POST <service_url>/rerank}, and returns them in the order the
 * service gives, with the service's scores as {@code _score}. Hits after top_k follow in their k-NN
 * order. When the service fails (timeout, connection error, non-2xx, malformed answer) the k-NN order
 * is returned unchanged. The outcome is the response ext {@code xmodal_rerank} (see
 * {@link XModalRerankResponseExt}). Requests without ext.xmodal pass through (status "skipped").
 *
 * <p>Hits are sent by id, with the {@code collection} they belong to (the processor's
 * {@code collection} setting, else the hit's index name without {@code index_prefix} and a
 * {@code -v<N>} suffix), so that the service reads each image from the collection it was indexed
 * into; no file path is sent unless {@code fields} asks for one.
 *
 * <pre>
 * {"xmodal_rerank": {"service_url": "http://127.0.0.1:8800", "top_k": 20, "timeout_ms": 2000,
 *                    "api_key": "...", "collection": "photos", "index_prefix": "xmr-",
 *                    "fields": {"caption": "caption"}}}
 * </pre>
 */
public final class XModalRerankProcessor extends AbstractProcessor implements SearchResponseProcessor {

    public static final String TYPE = "xmodal_rerank";

    public static final int DEFAULT_TOP_K = 20;
    public static final int MAX_TOP_K = 10_000;
    public static final int DEFAULT_TIMEOUT_MS = 2000;
    public static final int MAX_TIMEOUT_MS = 600_000;
    /** Default "fields": request name -> _source field. */
    public static final Map<String, String> DEFAULT_FIELDS;

    static {
        Map<String, String> fields = new LinkedHashMap<>();
        fields.put("caption", "caption");
        DEFAULT_FIELDS = Collections.unmodifiableMap(fields);
    }

    private static final Logger LOGGER = LogManager.getLogger(XModalRerankProcessor.class);

    private final URI rerankUri;
    private final int topK;
    private final int timeoutMs;
    private final String apiKey;
    private final Map<String, String> fields;
    private final String collection;
    private final String indexPrefix;
    private final RerankServiceClient client;
    private final Consumer<Runnable> executor;

    XModalRerankProcessor(
        String tag,
        String description,
        boolean ignoreFailure,
        URI rerankUri,
        int topK,
        int timeoutMs,
        String apiKey,
        Map<String, String> fields,
        String collection,
        String indexPrefix,
        RerankServiceClient client,
        Consumer<Runnable> executor
    ) {
        super(tag, description, ignoreFailure);
        this.collection = collection;
        this.indexPrefix = indexPrefix;
        this.rerankUri = rerankUri;
        this.topK = topK;
        this.timeoutMs = timeoutMs;
        this.apiKey = apiKey;
        this.fields = fields;
        this.client = client;
        this.executor = executor;
    }

    @Override
    public String getType() {
        return TYPE;
    }

    URI rerankUri() {
        return rerankUri;
    }

    /**
     * Calls the service on OpenSearch's generic thread pool (whose executor carries the request's
     * ThreadContext over), so that no search or transport thread waits up to timeout_ms for it.
     */
    @Override
    public void processResponseAsync(
        SearchRequest request,
        SearchResponse response,
        PipelineProcessingContext requestContext,
        ActionListener<SearchResponse> responseListener
    ) {
        if (findQuery(request) == null || hitCount(response) == 0) {
            SearchResponse result;
            try {
                result = processResponse(request, response);
            } catch (Exception e) {
                responseListener.onFailure(e);
                return;
            }
            responseListener.onResponse(result);
            return;
        }
        try {
            executor.accept(() -> {
                SearchResponse result;
                try {
                    result = processResponse(request, response);
                } catch (Exception e) {
                    responseListener.onFailure(e);
                    return;
                }
                responseListener.onResponse(result);
            });
        } catch (Exception e) {
            // The pool refused the task (node shutting down): keep the k-NN order.
            responseListener.onResponse(withOutcome(response, null, XModalRerankResponseExt.failed("could not schedule the rerank call: " + e, 0)));
        }
    }

    @Override
    public SearchResponse processResponse(SearchRequest request, SearchResponse response) throws Exception {
        XModalSearchExtBuilder query = findQuery(request);
        if (query == null) {
            return withOutcome(response, null, XModalRerankResponseExt.skipped("the search request has no ext." + XModalSearchExtBuilder.NAME));
        }
        if (hitCount(response) == 0) {
            return withOutcome(response, null, XModalRerankResponseExt.skipped("no hits"));
        }
        SearchHit[] hits = response.getHits().getHits();
        int n = Math.min(topK, hits.length);
        long start = System.nanoTime();
        try {
            byte[] body = requestBody(query, hits, n);
            byte[] answer = client.postJson(rerankUri, body, apiKey, timeoutMs);
            Reranked reranked = parseAnswer(answer, hits, n);
            long tookMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            SearchHits newHits = reorder(response.getHits(), reranked);
            return withOutcome(response, newHits, XModalRerankResponseExt.ok(n, tookMs, reranked.serviceTimingsMs));
        } catch (RerankServiceClient.RerankException e) {
            return failed(response, e.getMessage(), start);
        } catch (Exception e) {
            LOGGER.warn("[{}] rerank failed unexpectedly; returning the k-NN order", TYPE, e);
            return failed(response, "internal error: " + e, start);
        }
    }

    private SearchResponse failed(SearchResponse response, String reason, long startNanos) {
        long tookMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - startNanos);
        LOGGER.debug("[{}] rerank with {} failed after {} ms: {}", TYPE, rerankUri, tookMs, reason);
        return withOutcome(response, null, XModalRerankResponseExt.failed(reason, tookMs));
    }

    static XModalSearchExtBuilder findQuery(SearchRequest request) {
        if (request == null || request.source() == null || request.source().ext() == null) {
            return null;
        }
        for (SearchExtBuilder ext : request.source().ext()) {
            if (ext instanceof XModalSearchExtBuilder) {
                return (XModalSearchExtBuilder) ext;
            }
        }
        return null;
    }

    private static int hitCount(SearchResponse response) {
        SearchHits hits = response.getHits();
        return hits == null || hits.getHits() == null ? 0 : hits.getHits().length;
    }

    /** {"query": {"text"|"image_base64": ...}, "hits": [{"id", "score", <fields>...}]} */
    private byte[] requestBody(XModalSearchExtBuilder query, SearchHit[] hits, int n) throws IOException {
        try (XContentBuilder b = XContentFactory.jsonBuilder()) {
            b.startObject();
            b.startObject("query");
            if (query.queryText() != null) {
                b.field("text", query.queryText());
            } else {
                b.field("image_base64", query.queryImageBase64());
            }
            b.endObject();
            String target = collectionOf(hits, n);
            if (target != null) {
                b.field("collection", target);
            }
            b.startArray("hits");
            for (int i = 0; i < n; i++) {
                SearchHit hit = hits[i];
                b.startObject();
                b.field("id", hit.getId());
                float score = hit.getScore();
                if (Float.isNaN(score) || Float.isInfinite(score)) {
                    b.nullField("score");
                } else {
                    b.field("score", score);
                }
                Map<String, Object> source = hit.hasSource() ? hit.getSourceAsMap() : null;
                if (source != null) {
                    for (Map.Entry<String, String> field : fields.entrySet()) {
                        if (RESERVED.contains(field.getKey())) {
                            continue;
                        }
                        Object value = XContentMapValues.extractValue(field.getValue(), source);
                        if (value != null) {
                            b.field(field.getKey(), value);
                        }
                    }
                }
                b.endObject();
            }
            b.endArray();
            b.endObject();
            return BytesReference.toBytes(BytesReference.bytes(b));
        }
    }

    private static final java.util.Set<String> RESERVED = java.util.Set.of("id", "score", "collection");

    /**
     * The collection of the hits: the configured one, else that of the first hit's index when every
     * sent hit is in that index (alias {@code <prefix>C} over index {@code <prefix>C-v<N>}), else null.
     */
    String collectionOf(SearchHit[] hits, int n) {
        if (collection != null && !collection.isEmpty()) {
            return collection;
        }
        String index = null;
        for (int i = 0; i < n; i++) {
            String own = hits[i].getIndex();
            if (own == null || (index != null && !index.equals(own))) {
                return null;
            }
            index = own;
        }
        if (index == null || indexPrefix == null || !index.startsWith(indexPrefix)) {
            return null;
        }
        String name = index.substring(indexPrefix.length()).replaceFirst("-v[0-9]+$", "");
        return name.isEmpty() ? null : name;
    }

    /** The service's order: positions into the first n hits, and their new scores. */
    static final class Reranked {
        final int[] positions;
        final float[] scores;
        final Map<String, Object> serviceTimingsMs;

        Reranked(int[] positions, float[] scores, Map<String, Object> serviceTimingsMs) {
            this.positions = positions;
            this.scores = scores;
            this.serviceTimingsMs = serviceTimingsMs;
        }
    }

    /** Validates the answer: "hits" must be a permutation of the n ids sent, each with a finite numeric score. */
    static Reranked parseAnswer(byte[] answer, SearchHit[] hits, int n) throws RerankServiceClient.RerankException {
        Map<String, Object> map;
        try {
            map = XContentHelper.convertToMap(JsonXContent.jsonXContent, answer, 0, answer.length, true);
        } catch (Exception e) {
            throw malformed("not a JSON object (" + firstLine(e.getMessage()) + ")");
        }
        Object hitsValue = map.get("hits");
        if (!(hitsValue instanceof List)) {
            throw malformed("no \"hits\" array");
        }
        List<?> list = (List<?>) hitsValue;
        if (list.size() != n) {
            throw malformed("\"hits\" has " + list.size() + " entries, " + n + " were sent");
        }
        Map<String, Deque<Integer>> byId = new HashMap<>();
        for (int i = 0; i < n; i++) {
            byId.computeIfAbsent(hits[i].getId(), k -> new ArrayDeque<>()).add(i);
        }
        int[] positions = new int[n];
        float[] scores = new float[n];
        for (int j = 0; j < n; j++) {
            Object entry = list.get(j);
            if (!(entry instanceof Map)) {
                throw malformed("hits[" + j + "] is not an object");
            }
            Map<?, ?> e = (Map<?, ?>) entry;
            Object id = e.get("id");
            if (!(id instanceof String)) {
                throw malformed("hits[" + j + "].id is not a string");
            }
            Deque<Integer> slots = byId.get(id);
            if (slots == null || slots.isEmpty()) {
                throw malformed("hits[" + j + "].id [" + id + "] was not sent or is repeated");
            }
            Object score = e.get("score");
            if (!(score instanceof Number)) {
                throw malformed("hits[" + j + "].score is not a number");
            }
            float f = ((Number) score).floatValue();
            if (Float.isNaN(f) || Float.isInfinite(f)) {
                throw malformed("hits[" + j + "].score is not finite");
            }
            positions[j] = slots.poll();
            scores[j] = f;
        }
        Map<String, Object> timings = null;
        Object t = map.get("timings_ms");
        if (t instanceof Map) {
            timings = new LinkedHashMap<>();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) t).entrySet()) {
                timings.put(String.valueOf(e.getKey()), e.getValue());
            }
        }
        return new Reranked(positions, scores, timings);
    }

    private static RerankServiceClient.RerankException malformed(String what) {
        return new RerankServiceClient.RerankException("malformed answer: " + what);
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "unparsable";
        }
        int nl = s.indexOf('\n');
        String line = nl < 0 ? s : s.substring(0, nl);
        return line.length() > 200 ? line.substring(0, 200) : line;
    }

    /** The first n hits in the service's order with its scores, then the rest unchanged; max_score over all hits. */
    static SearchHits reorder(SearchHits original, Reranked reranked) {
        SearchHit[] hits = original.getHits();
        int n = reranked.positions.length;
        SearchHit[] out = new SearchHit[hits.length];
        for (int j = 0; j < n; j++) {
            SearchHit hit = hits[reranked.positions[j]];
            hit.score(reranked.scores[j]);
            out[j] = hit;
        }
        System.arraycopy(hits, n, out, n, hits.length - n);
        float maxScore = Float.NaN;
        for (SearchHit hit : out) {
            float s = hit.getScore();
            if (!Float.isNaN(s) && (Float.isNaN(maxScore) || s > maxScore)) {
                maxScore = s;
            }
        }
        return new SearchHits(
            out,
            original.getTotalHits(),
            maxScore,
            original.getSortFields(),
            original.getCollapseField(),
            original.getCollapseValues()
        );
    }

    /**
     * A copy of the response with {@code hits} (when not null) and the outcome as response ext.
     * SearchResponse#addSearchExtBuilder is not used: in 2.19 it fills a list that toXContent never
     * writes; the ext must be in the SearchResponseSections ("internal response").
     */
    static SearchResponse withOutcome(SearchResponse response, SearchHits hits, XModalRerankResponseExt outcome) {
        SearchResponseSections sections = response.getInternalResponse();
        List<SearchExtBuilder> exts = new ArrayList<>(sections.getSearchExtBuilders());
        exts.removeIf(e -> e instanceof XModalRerankResponseExt);
        exts.add(outcome);
        Map<String, ProfileShardResult> profile = sections.profile();
        SearchProfileShardResults profileResults = profile == null || profile.isEmpty() ? null : new SearchProfileShardResults(profile);
        SearchHits newHits = hits == null ? sections.hits() : hits;
        Aggregations aggregations = sections.aggregations();
        SearchResponseSections newSections;
        if (aggregations == null || aggregations instanceof InternalAggregations) {
            newSections = new InternalSearchResponse(
                newHits,
                (InternalAggregations) aggregations,
                sections.suggest(),
                profileResults,
                sections.timedOut(),
                sections.terminatedEarly(),
                sections.getNumReducePhases(),
                exts,
                sections.getProcessorResult()
            );
        } else {
            newSections = new SearchResponseSections(
                newHits,
                aggregations,
                sections.suggest(),
                sections.timedOut(),
                sections.terminatedEarly(),
                profileResults,
                sections.getNumReducePhases(),
                exts,
                sections.getProcessorResult()
            );
        }
        return new SearchResponse(
            newSections,
            response.getScrollId(),
            response.getTotalShards(),
            response.getSuccessfulShards(),
            response.getSkippedShards(),
            response.getTook().millis(),
            response.getPhaseTook(),
            response.getShardFailures(),
            response.getClusters(),
            response.pointInTimeId()
        );
    }

    /** Builds processors from pipeline definitions. */
    public static final class Factory implements Processor.Factory<SearchResponseProcessor> {
        private final RerankServiceClient client;
        private final Consumer<Runnable> executor;

        Factory(RerankServiceClient client, Consumer<Runnable> executor) {
            this.client = client;
            this.executor = executor;
        }

        @Override
        public XModalRerankProcessor create(
            Map<String, Processor.Factory<SearchResponseProcessor>> processorFactories,
            String tag,
            String description,
            boolean ignoreFailure,
            Map<String, Object> config,
            Processor.PipelineContext pipelineContext
        ) {
            String serviceUrl = ConfigurationUtils.readStringProperty(TYPE, tag, config, "service_url");
            URI uri = rerankUri(serviceUrl, tag);
            int topK = ConfigurationUtils.readIntProperty(TYPE, tag, config, "top_k", DEFAULT_TOP_K);
            if (topK < 1 || topK > MAX_TOP_K) {
                throw ConfigurationUtils.newConfigurationException(TYPE, tag, "top_k", "must be between 1 and " + MAX_TOP_K);
            }
            int timeoutMs = ConfigurationUtils.readIntProperty(TYPE, tag, config, "timeout_ms", DEFAULT_TIMEOUT_MS);
            if (timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS) {
                throw ConfigurationUtils.newConfigurationException(TYPE, tag, "timeout_ms", "must be between 1 and " + MAX_TIMEOUT_MS);
            }
            String apiKey = ConfigurationUtils.readOptionalStringProperty(TYPE, tag, config, "api_key");
            Map<String, Object> rawFields = ConfigurationUtils.readOptionalMap(TYPE, tag, config, "fields");
            Map<String, String> fields;
            if (rawFields == null) {
                fields = DEFAULT_FIELDS;
            } else {
                fields = new LinkedHashMap<>();
                for (Map.Entry<String, Object> e : rawFields.entrySet()) {
                    if (!(e.getValue() instanceof String) || ((String) e.getValue()).isEmpty()) {
                        throw ConfigurationUtils.newConfigurationException(
                            TYPE,
                            tag,
                            "fields",
                            "value of [" + e.getKey() + "] must be a _source field name (a non-empty string)"
                        );
                    }
                    if (RESERVED.contains(e.getKey())) {
                        throw ConfigurationUtils.newConfigurationException(TYPE, tag, "fields", "[" + e.getKey() + "] is reserved");
                    }
                    fields.put(e.getKey(), (String) e.getValue());
                }
                fields = Collections.unmodifiableMap(fields);
            }
            String collection = ConfigurationUtils.readOptionalStringProperty(TYPE, tag, config, "collection");
            String indexPrefix = ConfigurationUtils.readStringProperty(TYPE, tag, config, "index_prefix", "xmr-");
            return new XModalRerankProcessor(
                tag, description, ignoreFailure, uri, topK, timeoutMs, apiKey, fields, collection, indexPrefix, client, executor
            );
        }

        private static URI rerankUri(String serviceUrl, String tag) {
            URI base;
            try {
                base = new URI(serviceUrl.trim());
            } catch (URISyntaxException e) {
                throw ConfigurationUtils.newConfigurationException(TYPE, tag, "service_url", "is not a URL: " + e.getMessage());
            }
            String scheme = base.getScheme() == null ? "" : base.getScheme().toLowerCase(Locale.ROOT);
            if (!("http".equals(scheme) || "https".equals(scheme)) || base.getHost() == null) {
                throw ConfigurationUtils.newConfigurationException(TYPE, tag, "service_url", "must be an http:// or https:// URL with a host");
            }
            if (base.getQuery() != null || base.getFragment() != null) {
                throw ConfigurationUtils.newConfigurationException(TYPE, tag, "service_url", "must have no query or fragment");
            }
            String s = base.toString();
            while (s.endsWith("/")) {
                s = s.substring(0, s.length() - 1);
            }
            return URI.create(s + "/rerank");
        }
    }
}
