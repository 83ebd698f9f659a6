package org.xmodal.opensearch.rerank;

import java.io.IOException;
import java.util.Objects;

import org.opensearch.core.ParseField;
import org.opensearch.core.common.ParsingException;
import org.opensearch.core.common.io.stream.StreamInput;
import org.opensearch.core.common.io.stream.StreamOutput;
import org.opensearch.core.xcontent.XContentBuilder;
import org.opensearch.core.xcontent.XContentParser;
import org.opensearch.search.SearchExtBuilder;

/**
 * The search request ext {@code "ext": {"xmodal": {"query_text": "..."}}} or
 * {@code "ext": {"xmodal": {"query_image_base64": "..."}}}: the query the rerank service scores the
 * hits against. Exactly one of the two must be given.
 */
public final class XModalSearchExtBuilder extends SearchExtBuilder {

    public static final String NAME = "xmodal";
    public static final ParseField QUERY_TEXT = new ParseField("query_text");
    public static final ParseField QUERY_IMAGE_BASE64 = new ParseField("query_image_base64");

    private final String queryText;
    private final String queryImageBase64;

    public XModalSearchExtBuilder(String queryText, String queryImageBase64) {
        boolean hasText = queryText != null && !queryText.isEmpty();
        boolean hasImage = queryImageBase64 != null && !queryImageBase64.isEmpty();
        if (hasText == hasImage) {
            throw new IllegalArgumentException(
                "[" + NAME + "] needs exactly one of [" + QUERY_TEXT.getPreferredName() + "] and ["
                    + QUERY_IMAGE_BASE64.getPreferredName() + "] (a non-empty string)"
            );
        }
        this.queryText = hasText ? queryText : null;
        this.queryImageBase64 = hasImage ? queryImageBase64 : null;
    }

    public XModalSearchExtBuilder(StreamInput in) throws IOException {
        this.queryText = in.readOptionalString();
        this.queryImageBase64 = in.readOptionalString();
    }

    @Override
    public void writeTo(StreamOutput out) throws IOException {
        out.writeOptionalString(queryText);
        out.writeOptionalString(queryImageBase64);
    }

    @Override
    public String getWriteableName() {
        return NAME;
    }

    /** The text query, or null for an image query. */
    public String queryText() {
        return queryText;
    }

    /** The base64 image query, or null for a text query. */
    public String queryImageBase64() {
        return queryImageBase64;
    }

    @Override
    public XContentBuilder toXContent(XContentBuilder builder, Params params) throws IOException {
        builder.startObject(NAME);
        if (queryText != null) {
            builder.field(QUERY_TEXT.getPreferredName(), queryText);
        }
        if (queryImageBase64 != null) {
            builder.field(QUERY_IMAGE_BASE64.getPreferredName(), queryImageBase64);
        }
        return builder.endObject();
    }

    /** Parses the object under ext.xmodal (the parser is on its START_OBJECT). */
    public static XModalSearchExtBuilder fromXContent(XContentParser parser) throws IOException {
        XContentParser.Token token = parser.currentToken();
        if (token != XContentParser.Token.START_OBJECT) {
            throw new ParsingException(parser.getTokenLocation(), "[" + NAME + "] must be an object, got " + token);
        }
        String text = null;
        String image = null;
        String field = null;
        while ((token = parser.nextToken()) != XContentParser.Token.END_OBJECT) {
            if (token == XContentParser.Token.FIELD_NAME) {
                field = parser.currentName();
            } else if (QUERY_TEXT.match(field, parser.getDeprecationHandler())) {
                text = readString(parser, field, token);
            } else if (QUERY_IMAGE_BASE64.match(field, parser.getDeprecationHandler())) {
                image = readString(parser, field, token);
            } else {
                throw new ParsingException(parser.getTokenLocation(), "[" + NAME + "] unknown field [" + field + "]");
            }
        }
        try {
            return new XModalSearchExtBuilder(text, image);
        } catch (IllegalArgumentException e) {
            throw new ParsingException(parser.getTokenLocation(), e.getMessage());
        }
    }

    private static String readString(XContentParser parser, String field, XContentParser.Token token) throws IOException {
        if (token == XContentParser.Token.VALUE_NULL) {
            return null;
        }
        if (token != XContentParser.Token.VALUE_STRING) {
            throw new ParsingException(parser.getTokenLocation(), "[" + NAME + "] [" + field + "] must be a string, got " + token);
        }
        return parser.text();
    }

    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (o == null || getClass() != o.getClass()) {
            return false;
        }
        XModalSearchExtBuilder that = (XModalSearchExtBuilder) o;
        return Objects.equals(queryText, that.queryText) && Objects.equals(queryImageBase64, that.queryImageBase64);
    }

    @Override
    public int hashCode() {
        return Objects.hash(getClass(), queryText, queryImageBase64);
    }
}
