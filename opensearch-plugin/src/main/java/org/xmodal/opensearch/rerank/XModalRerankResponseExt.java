package org.xmodal.opensearch.rerank;

import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

import org.opensearch.core.common.io.stream.StreamInput;
import org.opensearch.core.common.io.stream.StreamOutput;
import org.opensearch.core.xcontent.XContentBuilder;
import org.opensearch.core.xcontent.XContentParser;
import org.opensearch.search.SearchExtBuilder;

/**
 * The search response ext that the xmodal_rerank processor adds:
 * <pre>
 * "ext": {"xmodal_rerank": {"status": "ok", "reranked": 10, "took_ms": 12, "service_timings_ms": {...}}}
 * "ext": {"xmodal_rerank": {"status": "failed", "reason": "...", "took_ms": 2001}}
 * "ext": {"xmodal_rerank": {"status": "skipped", "reason": "..."}}
 * </pre>
 * It is also registered as a search ext (SearchPlugin#getSearchExts) so that its name is in the
 * NamedWriteableRegistry: a SearchResponse carrying it can be serialized between nodes.
 */
public final class XModalRerankResponseExt extends SearchExtBuilder {

    public static final String NAME = "xmodal_rerank";
    public static final String STATUS_OK = "ok";
    public static final String STATUS_FAILED = "failed";
    public static final String STATUS_SKIPPED = "skipped";

    private final String status;
    private final String reason;
    private final Integer reranked;
    private final Long tookMs;
    private final Map<String, Object> serviceTimingsMs;

    public XModalRerankResponseExt(String status, String reason, Integer reranked, Long tookMs, Map<String, Object> serviceTimingsMs) {
        this.status = Objects.requireNonNull(status, "status");
        this.reason = reason;
        this.reranked = reranked;
        this.tookMs = tookMs;
        this.serviceTimingsMs = serviceTimingsMs;
    }

    public static XModalRerankResponseExt ok(int reranked, long tookMs, Map<String, Object> serviceTimingsMs) {
        return new XModalRerankResponseExt(STATUS_OK, null, reranked, tookMs, serviceTimingsMs);
    }

    public static XModalRerankResponseExt failed(String reason, long tookMs) {
        return new XModalRerankResponseExt(STATUS_FAILED, reason, null, tookMs, null);
    }

    public static XModalRerankResponseExt skipped(String reason) {
        return new XModalRerankResponseExt(STATUS_SKIPPED, reason, null, null, null);
    }

    public XModalRerankResponseExt(StreamInput in) throws IOException {
        this.status = in.readString();
        this.reason = in.readOptionalString();
        this.reranked = in.readBoolean() ? in.readVInt() : null;
        this.tookMs = in.readBoolean() ? in.readVLong() : null;
        this.serviceTimingsMs = in.readBoolean() ? in.readMap() : null;
    }

    @Override
    public void writeTo(StreamOutput out) throws IOException {
        out.writeString(status);
        out.writeOptionalString(reason);
        out.writeBoolean(reranked != null);
        if (reranked != null) {
            out.writeVInt(reranked);
        }
        out.writeBoolean(tookMs != null);
        if (tookMs != null) {
            out.writeVLong(tookMs);
        }
        out.writeBoolean(serviceTimingsMs != null);
        if (serviceTimingsMs != null) {
            out.writeMap(serviceTimingsMs);
        }
    }

    @Override
    public String getWriteableName() {
        return NAME;
    }

    public String status() {
        return status;
    }

    public String reason() {
        return reason;
    }

    @Override
    public XContentBuilder toXContent(XContentBuilder builder, Params params) throws IOException {
        builder.startObject(NAME);
        builder.field("status", status);
        if (reason != null) {
            builder.field("reason", reason);
        }
        if (reranked != null) {
            builder.field("reranked", reranked);
        }
        if (tookMs != null) {
            builder.field("took_ms", tookMs);
        }
        if (serviceTimingsMs != null) {
            builder.field("service_timings_ms", serviceTimingsMs);
        }
        return builder.endObject();
    }

    /** Parses the object written by toXContent (only needed to register the name; never sent by clients). */
    public static XModalRerankResponseExt fromXContent(XContentParser parser) throws IOException {
        Map<String, Object> map = parser.map();
        Object status = map.get("status");
        Object reason = map.get("reason");
        Object reranked = map.get("reranked");
        Object took = map.get("took_ms");
        Object timings = map.get("service_timings_ms");
        Map<String, Object> timingsMap = null;
        if (timings instanceof Map) {
            timingsMap = new LinkedHashMap<>();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) timings).entrySet()) {
                timingsMap.put(String.valueOf(e.getKey()), e.getValue());
            }
        }
        return new XModalRerankResponseExt(
            status == null ? STATUS_SKIPPED : status.toString(),
            reason == null ? null : reason.toString(),
            reranked instanceof Number ? ((Number) reranked).intValue() : null,
            took instanceof Number ? ((Number) took).longValue() : null,
            timingsMap
        );
    }

    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (o == null || getClass() != o.getClass()) {
            return false;
        }
        XModalRerankResponseExt that = (XModalRerankResponseExt) o;
        return status.equals(that.status)
            && Objects.equals(reason, that.reason)
            && Objects.equals(reranked, that.reranked)
            && Objects.equals(tookMs, that.tookMs)
            && Objects.equals(serviceTimingsMs, that.serviceTimingsMs);
    }

    @Override
    public int hashCode() {
        return Objects.hash(getClass(), status, reason, reranked, tookMs, serviceTimingsMs);
    }

    @Override
    public String toString() {
        return NAME + "{status=" + status + ", reason=" + reason + ", reranked=" + reranked + ", took_ms=" + tookMs + "}";
    }
}
